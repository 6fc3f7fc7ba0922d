#!/usr/bin/env bash
# One short GPU check (a few minutes): the CUDA tests, the training speed on CUDA with the data on
# the device (fp32, bf16, torch.compile), and export parity there. Run from the repository root:
#   bash benchmarks/gpu_check.sh [OUT_DIR]      (default OUT_DIR: $OUT, else benchmarks/results/gpu)
# Needs a Python with torch (CUDA build) and this repository's requirements; set PYTHON to pick one.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-benchmarks/results/gpu}}"
mkdir -p "$out"
py="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "== $*" | tee -a "$out/gpu_check.log"; }

log "$(date -u +%FT%TZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$out/gpu_check.log"
"$py" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE'); sys.exit(0 if torch.cuda.is_available() else 3)" 2>&1 | tee -a "$out/gpu_check.log"
[ "${PIPESTATUS[0]}" = 0 ] || { log "no CUDA device visible to $py: stopping"; exit 3; }

log "CUDA tests"
timeout 300 "$py" -m pytest -q -rs tests/test_cuda.py tests/test_data.py::test_batches_on_cuda_match_cpu \
  tests/test_speed_options.py 2>&1 | tail -15 | tee -a "$out/gpu_check.log"

log "training speed on CUDA, data resident on the GPU (fp32 / bf16 / torch.compile)"
timeout 420 "$py" benchmarks/gpu_speed.py --out "$out" 2>&1 | tail -20 | tee -a "$out/gpu_check.log"
log "done: $out"
