#!/usr/bin/env bash
# The aarch64 check, runnable on any x86-64 Linux box with Debian's g++-aarch64-linux-gnu and qemu-user:
#   1. cross-compiles (compile only, -c) every C++ unit of fastdistill._C for aarch64 with setup.py's flags: the
#      drivers and scalar tier (csrc/cpu/*.cpp), the arm tiers (csrc/cpu/arm/*.cpp) and, when pybind11 and the
#      Python headers are found, the pybind11 glue (csrc/bind/*.cpp; the host's pyconfig.h stands in for an aarch64
#      one, whose type sizes it shares on LP64 Linux);
#   2. links csrc/tests/arm_kernels_test.cpp with those units statically (the scalar tier recompiled without
#      vectorization, as the test's plain reference) and runs it under qemu-aarch64 at `-cpu max` (neon and
#      neon_dot) and `-cpu cortex-a72` (no dot product: neon only).
# Arguments after the script are passed to the test driver (e.g. --x86-pack FILE). Exits non-zero on any failure.
# Environment: AARCH64_CXX (aarch64-linux-gnu-g++), QEMU_AARCH64 (qemu-aarch64), ARM_BUILD (build/arm),
# FASTDISTILL_BUILD_JOBS (the core count), ARM_CPUS ("max cortex-a72").
set -euo pipefail
cd "$(dirname "$0")/.."
CXX=${AARCH64_CXX:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
OUT=${ARM_BUILD:-build/arm}
JOBS=${FASTDISTILL_BUILD_JOBS:-$(nproc)}
CPUS=${ARM_CPUS:-max cortex-a72}
EXT_FLAGS=(-std=c++17 -O3 -g0 -fopenmp -fvisibility=hidden -fno-math-errno -fPIC -Icsrc -Wall -Wextra -Werror)
REF_FLAGS=(-std=c++17 -O2 -fno-tree-vectorize -fno-math-errno -Icsrc -Wall -Wextra -Werror -Wno-unknown-pragmas)  # no OpenMP: no simd
mkdir -p "$OUT/ext" "$OUT/ref" "$OUT/bind"
command -v "$CXX" >/dev/null || { echo "arm_check: $CXX not found (apt-get install g++-aarch64-linux-gnu)"; exit 2; }
command -v "$QEMU" >/dev/null || { echo "arm_check: $QEMU not found (apt-get install qemu-user)"; exit 2; }

compile() {  # compile <out dir> <source> <flags...>: one object, in the background queue
  local dir=$1 src=$2
  shift 2
  "$CXX" "$@" -c "$src" -o "$dir/$(basename "${src%.cpp}").o"
}
export -f compile
export CXX

units=(csrc/cpu/*.cpp csrc/cpu/arm/*.cpp)
start=$(date +%s)
printf '%s\n' "${units[@]}" | xargs -P "$JOBS" -I{} bash -c 'compile "$0" {} "${@}"' "$OUT/ext" "${EXT_FLAGS[@]}"
echo "arm_check: cross-compiled ${#units[@]} kernel units for aarch64 (${units[*]})"

py_inc=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
pb_inc=$(python3 -c 'import pybind11; print(pybind11.get_include())' 2>/dev/null || true)
binds=(csrc/bind/*.cpp)
if [ -n "$py_inc" ] && [ -n "$pb_inc" ] && [ -f "$py_inc/Python.h" ]; then
  printf '%s\n' "${binds[@]}" | xargs -P "$JOBS" -I{} bash -c 'compile "$0" {} "${@}"' "$OUT/bind" \
    "${EXT_FLAGS[@]}" -I"$pb_inc" -I"$py_inc"
  echo "arm_check: cross-compiled ${#binds[@]} pybind11 glue units for aarch64 (Python headers: $py_inc)"
else
  echo "arm_check: SKIPPED the pybind11 glue units (no pybind11 / Python headers for python3)"
fi

# The test binary: scalar-tier units rebuilt as plain code, everything else as the extension builds it.
refs=(csrc/cpu/*_scalar.cpp)
printf '%s\n' "${refs[@]}" | xargs -P "$JOBS" -I{} bash -c 'compile "$0" {} "${@}"' "$OUT/ref" "${REF_FLAGS[@]}"
objs=()
for o in "$OUT"/ext/*.o; do
  case "$o" in *_scalar.o) objs+=("$OUT/ref/$(basename "$o")") ;; *) objs+=("$o") ;; esac
done
"$CXX" -std=c++17 -O2 -fopenmp -Icsrc -Wall -Wextra -Werror -static csrc/tests/arm_kernels_test.cpp "${objs[@]}" \
  -o "$OUT/arm_kernels_test"
echo "arm_check: built $OUT/arm_kernels_test (static aarch64) in $(( $(date +%s) - start )) s"

status=0
for cpu in $CPUS; do
  echo "arm_check: qemu-aarch64 -cpu $cpu"
  t0=$(date +%s)
  # passive waits: spinning OpenMP workers are emulated instruction by instruction (3x the run time)
  if OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive "$QEMU" -cpu "$cpu" "$OUT/arm_kernels_test" "$@"; then
    echo "arm_check: -cpu $cpu passed in $(( $(date +%s) - t0 )) s"
  else
    echo "arm_check: -cpu $cpu FAILED"
    status=1
  fi
done
exit $status
