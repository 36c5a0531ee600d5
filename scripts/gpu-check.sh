#!/usr/bin/env bash
# The checks that need an NVIDIA GPU and the CUDA toolkit, which CI only type-checks: builds with
# `--features cuda`, runs the quickstart, the resume-equality tests and the checkpoint bench, the GPU
# tests of the NCCL gradient path when Open MPI and NCCL are there, and prints a summary with timings.
# Exits non-zero when a step fails (the others still run). Usage: scripts/gpu-check.sh
#
# Where the device comes from: the examples, the integration tests and the checkpoint bench build their
# modules on `Cpu` (they are written for CPU-only CI). With `--features cuda` they compile and link the
# CUDA path (dfdx's kernels, cudarc, the `Cuda` impl of `Backend`) and run on the CPU; the steps marked
# `[gpu]` below run on the GPU itself.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

export CARGO_TERM_COLOR=never
log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

names=()
results=()
seconds=()
failed=0

# step NAME COMMAND...: runs the command, its output shown and kept, and records the outcome.
step() {
    local name="$1"
    shift
    local log="$log_dir/${#names[@]}.log"
    echo
    echo "=== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$log"
    local status=${PIPESTATUS[0]}
    names+=("$name")
    seconds+=($((SECONDS - start)))
    if [ "$status" -eq 0 ]; then
        results+=("ok")
    else
        results+=("FAILED ($status)")
        failed=1
    fi
}

# skip NAME WHY: records a step that could not run here.
skip() {
    names+=("$1")
    seconds+=(0)
    results+=("skipped: $2")
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "error: no NVIDIA GPU visible (\`nvidia-smi -L\` fails); run this on a machine with one" >&2
    exit 1
fi
cuda_root="${CUDA_ROOT:-${CUDA_PATH:-${CUDA_TOOLKIT_ROOT_DIR:-/usr/local/cuda}}}"
if [ ! -f "$cuda_root/include/cuda.h" ]; then
    echo "error: no CUDA toolkit at \`$cuda_root\` (no include/cuda.h); set CUDA_ROOT to the toolkit" >&2
    exit 1
fi
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
echo "CUDA toolkit: $cuda_root"

step "build (cuda)" cargo build --release --features cuda --all-targets
step "quickstart (cpu module, cuda build)" cargo run --release --features cuda --example 01-quickstart
step "resume equality (cpu module, cuda build)" cargo test --release --features cuda --test it resume::
step "checkpoint bench" cargo bench --features cuda --bench checkpoint_io
# cudarc links libnccl with `mpi`; mpi-sys needs Open MPI.
if ! command -v mpirun >/dev/null 2>&1; then
    skip "[gpu] nccl gradient path" "no \`mpirun\` (install libopenmpi-dev openmpi-bin libclang-dev)"
elif ! ldconfig -p 2>/dev/null | grep -q 'libnccl\.so'; then
    skip "[gpu] nccl gradient path" "no libnccl.so (install NCCL 2.10 or later)"
else
    step "[gpu] nccl gradient path" cargo test --release -p fulgur-runtime --features cuda,mpi --lib \
        strategy::nccl:: -- --ignored
fi

echo
echo "=== summary"
for i in "${!names[@]}"; do
    printf '%-45s %6ss  %s\n' "${names[$i]}" "${seconds[$i]}" "${results[$i]}"
done
if [ "$failed" -ne 0 ]; then
    echo "some steps failed (their output is above)" >&2
fi
exit "$failed"
