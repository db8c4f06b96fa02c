#!/usr/bin/env bash
# The prepared GPU check (see docs/gpu.md): CUDA tests, gpt2 124m MFU, banded vs dense attention,
# MoE vs its dense twin, a short matched-compute compare, and with 2 or more GPUs DDP against FSDP2
# (--parallel fsdp2, torchrun on 2 GPUs; skipped on one). One CUDA GPU: under 8 minutes on an H100/H200.
#
#   bash benchmarks/gpu_check.sh OUTDIR [gpu_check.py options]     # OUTDIR defaults to $OUT, else gpu_check_out
#
# Writes OUTDIR/gpu_check.md (tables, targets met or not), OUTDIR/gpu_check.json, logs, and
# OUTDIR/environment.txt. Exit status 1 if a section failed (an unmet target is not a failure).
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR="${1:-${OUT:-gpu_check_out}}"
shift || true
mkdir -p "$OUTDIR"
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    date -u
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    python -c "import torch, platform; print('python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.version.cuda, '| devices', torch.cuda.device_count())"
} > "$OUTDIR/environment.txt" 2>&1
python benchmarks/gpu_check.py --out "$OUTDIR" "$@" 2>&1 | tee "$OUTDIR/gpu_check.log"
exit "${PIPESTATUS[0]}"
