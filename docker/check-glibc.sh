#!/bin/sh
# check-glibc LIB MAX: fail when the shared library LIB needs a glibc symbol version newer than MAX
# (it would not load, and a preloaded libvgpu.so would be skipped, in images with an older glibc).
set -eu
lib=$1
max=$2
needed=$(objdump -T "$lib" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n -u | tail -n 1)
if [ -z "$needed" ]; then
  echo "check-glibc: $lib needs no versioned glibc symbols"
  exit 0
fi
newest=$(printf '%s\n%s\n' "$needed" "$max" | sort -t. -k1,1n -k2,2n -k3,3n | tail -n 1)
if [ "$newest" != "$max" ] && [ "$needed" != "$max" ]; then
  echo "check-glibc: $lib needs GLIBC_$needed, newer than GLIBC_$max; build it on an older glibc" >&2
  exit 1
fi
echo "check-glibc: $lib needs at most GLIBC_$needed (limit $max)"
