#!/bin/sh
# Run the C tests against the fake driver, each scenario with its own env; $B is the build dir.
set -u
B=${B:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BD="$ROOT/$B"
TMP=$(mktemp -d /tmp/vgpu-ctest.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
pass=0
fail=0
GPU0="GPU-3e7a0c1d-5b2f-4c8e-9a61-0d4f2b7c9e10"
# under ASan its runtime must come first in the preload list
PRE="$BD/libvgpu.so"
[ -n "${ASAN_LIB:-}" ] && PRE="$ASAN_LIB:$PRE"
# the fake and the test programs keep process-lifetime objects: leaks are checked in the unit tests
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run() { # name, then env assignments and the command
    name=$1
    shift
    if env "$@" >"$TMP/out" 2>&1; then
        pass=$((pass + 1))
        echo "ok   $name"
    else
        fail=$((fail + 1))
        echo "FAIL $name"
        sed 's/^/     /' "$TMP/out"
    fi
}

run test_env ASAN_OPTIONS=detect_leaks=1 "$BD/tests/test_env"
run test_limits ASAN_OPTIONS=detect_leaks=1 "$BD/tests/test_limits"
run test_region ASAN_OPTIONS=detect_leaks=1 "$BD/tests/test_region"
for route in cudart dlsym direct; do
    bin="$BD/tests/test_hooks"
    [ "$route" = direct ] && bin="$BD/tests/test_direct"
    for sc in resolve memory; do
        rm -f "$TMP/state" "$TMP/cache"
        run "hooks $sc $route" LD_LIBRARY_PATH="$BD/fake" LD_PRELOAD="$PRE" \
            TESSERA_FAKE_STATE="$TMP/state" TESSERA_FAKE_GPUS="$GPU0=80GiB/132sm" \
            CUDA_DEVICE_MEMORY_LIMIT_0=1g CUDA_DEVICE_MEMORY_SHARED_CACHE="$TMP/cache" "$bin" "$sc" "$route"
    done
done
rm -f "$TMP/state" "$TMP/cache"
run "hooks oversub" LD_LIBRARY_PATH="$BD/fake" LD_PRELOAD="$PRE" TESSERA_FAKE_STATE="$TMP/state" \
    TESSERA_FAKE_GPUS="$GPU0=8GiB/132sm" CUDA_DEVICE_MEMORY_LIMIT_0=12g CUDA_OVERSUBSCRIBE=true \
    CUDA_DEVICE_MEMORY_SHARED_CACHE="$TMP/cache" "$BD/tests/test_hooks" oversub cudart
# the driver's limits file: it wins over an env that says 100 GiB, named by TESSERA_LIMITS_FILE here
# and found at its fixed path under a mount namespace (a read-only bind mount, as the runtime makes it)
rm -f "$TMP/state" "$TMP/cache"
: >"$TMP/region"
printf 'tessera-limits 1\nregion %s\npriority 1\ncore-policy default\noversubscribe false\ndevice %s memory=%s sm=0\n' \
    "$TMP/region" "$GPU0" 1073741824 >"$TMP/limits"
run "hooks memory limits file" LD_LIBRARY_PATH="$BD/fake" LD_PRELOAD="$PRE" TESSERA_FAKE_STATE="$TMP/state" \
    TESSERA_FAKE_GPUS="$GPU0=80GiB/132sm" TESSERA_LIMITS_FILE="$TMP/limits" CUDA_DEVICE_MEMORY_LIMIT_0=100g \
    CUDA_DEVICE_MEMORY_SHARED_CACHE="$TMP/cache" "$BD/tests/test_hooks" memory cudart
if unshare --mount true 2>/dev/null; then
    rm -f "$TMP/state"
    : >"$TMP/region"
    # The single-quoted script is expanded by the inner sh ("$0": the limits file, "$@": the command).
    # shellcheck disable=SC2016
    run "hooks memory fixed path" unshare --mount --propagation private sh -c 'mount -t tmpfs -o size=64k tessera /run &&
        mkdir /run/tessera && : >/run/tessera/limits && mount --bind "$0" /run/tessera/limits &&
        mount -o remount,bind,ro /run/tessera/limits && exec env "$@"' "$TMP/limits" \
        LD_LIBRARY_PATH="$BD/fake" LD_PRELOAD="$PRE" TESSERA_FAKE_STATE="$TMP/state" TESSERA_FAKE_GPUS="$GPU0=80GiB/132sm" \
        CUDA_DEVICE_MEMORY_LIMIT_0=100g "$BD/tests/test_hooks" memory cudart
else
    echo "skip hooks memory fixed path (no mount namespace: needs root or user namespaces)"
fi
rm -f "$TMP/state"
head -c 300000 /dev/zero | tr '\0' 'x' >"$TMP/cache"
run "hooks broken region" LD_LIBRARY_PATH="$BD/fake" LD_PRELOAD="$PRE" TESSERA_FAKE_STATE="$TMP/state" \
    TESSERA_FAKE_GPUS="$GPU0=8GiB/132sm" CUDA_DEVICE_MEMORY_LIMIT_0=1g CUDA_DEVICE_MEMORY_SHARED_CACHE="$TMP/cache" \
    "$BD/tests/test_hooks" broken cudart
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
