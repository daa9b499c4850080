#!/usr/bin/env bash
# gpu-check.sh: libvgpu on a real NVIDIA GPU (issue 4's GPU check).
#
# Builds the library, then with a 4 GiB memory limit and a 30 % SM limit on device 0:
#   1. PyTorch torch.empty in 256 MiB steps: OOM at the limit (default allocator, cudaMallocAsync,
#      expandable segments), and the bytes an unhooked NVML reader sees stay under the limit;
#   2. torch.cuda.mem_get_info() and nvidia-smi (run under the library) report 4 GiB;
#   3. utilisation of a compute-bound loop, sampled every 200 ms by an unhooked process over 20 s
#      (after 10 s of settling), next to the same loop without a limit;
#   4. launch overhead and alloc/free overhead with and without the library (no SM limit).
# Prints a summary and writes JSON to $OUT/gpu-check.json when OUT is set.
# Needs: gcc, make, nvidia-smi, python3 with torch (the torch checks are skipped without it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LIMIT_MIB=${LIMIT_MIB:-4096}
SM_LIMIT=${SM_LIMIT:-30}
SETTLE_S=${SETTLE_S:-10}
SAMPLE_S=${SAMPLE_S:-20}
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/gpu-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"
: >"$RESULTS"

say() { printf '== %s\n' "$*"; }
record() { printf '%s\n' "$1" >>"$RESULTS"; }

say "build"
make -s -C "$HERE" build/libvgpu.so build/tools/cuda-workload build/tests/vgpu-bench
LIB="$HERE/build/libvgpu.so"
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: not a GPU machine" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total,uuid --format=csv,noheader | tee "$WORK/gpu.txt"
record "{\"check\":\"gpu\",\"info\":\"$(head -n1 "$WORK/gpu.txt" | tr -d '"')\"}"

# the container's env: what the DRA driver writes (isolation/env.py), plus the preload
hooked_env() {
    env LD_PRELOAD="$LIB" CUDA_DEVICE_MEMORY_LIMIT_0="${LIMIT_MIB}m" CUDA_DEVICE_SM_LIMIT_0="$1" \
        GPU_CORE_UTILIZATION_POLICY=force CUDA_DEVICE_MEMORY_SHARED_CACHE="$WORK/$2.cache" "${@:3}"
}

HAVE_TORCH=0
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then HAVE_TORCH=1; fi

# ---- 1 + 2: memory ------------------------------------------------------------------------------
cat >"$WORK/mem.py" <<'PYEOF'
import json, os, subprocess, sys
import torch
limit = int(sys.argv[1]) << 20
free, total = torch.cuda.mem_get_info()
held, err = [], ""
try:
    for _ in range(4 * limit // (256 << 20)):
        held.append(torch.empty(256 << 20, dtype=torch.uint8, device="cuda"))
except torch.cuda.OutOfMemoryError as e:
    err = str(e).splitlines()[0][:160]
torch.cuda.synchronize()
free_after, _ = torch.cuda.mem_get_info()
# the host's view, from an unhooked process: what the driver really handed out
unhooked = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
q = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                   env=unhooked, capture_output=True, text=True).stdout
mine = [int(line.split(",")[1]) for line in q.splitlines() if line.split(",")[0].strip() == str(os.getpid())]
smi = subprocess.run(["nvidia-smi", "--query-gpu=memory.total,memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                     capture_output=True, text=True).stdout.strip()
print(json.dumps({
    "check": "memory", "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"),
    "mem_get_info_total_mib": total >> 20, "mem_get_info_free_mib": free >> 20,
    "granted_mib": len(held) * 256, "oom": bool(err), "oom_message": err, "free_after_mib": free_after >> 20,
    "host_view_process_mib": mine[0] if mine else None, "nvidia_smi_hooked_total_used_mib": smi,
}))
PYEOF
if [ "$HAVE_TORCH" = 1 ]; then
    for conf in "" "backend:cudaMallocAsync" "expandable_segments:True"; do
        say "torch.empty to the limit (PYTORCH_CUDA_ALLOC_CONF=${conf:-default})"
        rm -f "$WORK/mem.cache"
        out=$(hooked_env 0 mem PYTORCH_CUDA_ALLOC_CONF="$conf" "$PY" "$WORK/mem.py" "$LIMIT_MIB")
        echo "$out"
        record "$out"
    done
else
    say "torch with CUDA not available: memory checks through cuda-workload only"
fi
say "cuda-workload to the limit (driver API, cudart-style resolution)"
rm -f "$WORK/wl.cache"
out=$(hooked_env 0 wl "$HERE/build/tools/cuda-workload" --json --total-mib $((LIMIT_MIB + 2048)) --step-mib 512 --free)
echo "$out"
record "{\"check\":\"cuda-workload\",\"lines\":[$(echo "$out" | paste -sd, -)]}"
say "nvidia-smi under the library"
smi=$(hooked_env 0 wl nvidia-smi --query-gpu=memory.total,memory.used --format=csv,noheader,nounits -i 0)
echo "memory.total, memory.used (MiB): $smi"
record "{\"check\":\"nvidia-smi\",\"total_used_mib\":\"$smi\"}"

# ---- 3: utilisation -----------------------------------------------------------------------------
cat >"$WORK/busy.py" <<'PYEOF'
import sys, time
import torch
n = 4096
a = torch.randn(n, n, device="cuda", dtype=torch.float16)
b = torch.randn(n, n, device="cuda", dtype=torch.float16)
end = time.time() + float(sys.argv[1])
iters = 0
while time.time() < end:
    for _ in range(8):
        c = a @ b
    torch.cuda.synchronize()
    iters += 8
print(iters)
PYEOF
sample() { # seconds -> mean GPU utilisation from an unhooked nvidia-smi, sampled every 200 ms
    timeout "$1" nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -i 0 -lms 200 \
        | awk '{ s += $1; n++ } END { if (n) printf "%.1f %d", s / n, n; else print "nan 0" }' || true
}
busy_run() { # label, sm limit
    local total=$((SETTLE_S + SAMPLE_S + 2)) cmd
    if [ "$HAVE_TORCH" = 1 ]; then cmd=("$PY" "$WORK/busy.py" "$total")
    else cmd=("$HERE/build/tools/cuda-workload" --launch-seconds "$total" --kernel-us 2000 --grid 1056); fi
    rm -f "$WORK/busy.cache"
    if [ "$2" = 0 ]; then env "${cmd[@]}" >"$WORK/$1.out" & else hooked_env "$2" busy "${cmd[@]}" >"$WORK/$1.out" & fi
    local pid=$!
    sleep "$SETTLE_S"
    read -r mean n < <(sample "$SAMPLE_S")
    wait "$pid"
    echo "$1: SM limit ${2}%: mean utilisation ${mean}% over ${n} samples; work done: $(tail -n1 "$WORK/$1.out")"
    record "{\"check\":\"utilisation\",\"label\":\"$1\",\"sm_limit\":$2,\"mean_util\":$mean,\"samples\":$n,\"work\":\"$(tail -n1 "$WORK/$1.out")\"}"
}
say "utilisation: ${SETTLE_S}s settle, ${SAMPLE_S}s sampled by an unhooked nvidia-smi"
busy_run unlimited 0
busy_run limited "$SM_LIMIT"

# ---- 4: overhead --------------------------------------------------------------------------------
say "launch and alloc/free overhead (no SM limit)"
plain=$("$HERE/build/tests/vgpu-bench" 20000)
hooked=$(env LD_PRELOAD="$LIB" CUDA_DEVICE_MEMORY_LIMIT_0="${LIMIT_MIB}m" \
    CUDA_DEVICE_MEMORY_SHARED_CACHE="$WORK/bench.cache" "$HERE/build/tests/vgpu-bench" 20000)
echo "without libvgpu: $plain"
echo "with libvgpu:    $hooked"
record "{\"check\":\"overhead\",\"without\":$plain,\"with\":$hooked}"

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    "$PY" -c 'import json,sys; print(json.dumps([json.loads(l) for l in open(sys.argv[1]) if l.strip()], indent=1))' \
        "$RESULTS" >"$OUT/gpu-check.json"
    say "results: $OUT/gpu-check.json"
fi
