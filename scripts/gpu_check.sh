#!/usr/bin/env bash
# GPU check on a lent GPU machine (torch and transformers in its image, no internet): installs the
# wheels carried in .whl/ (DeepSpeed, pydantic, hjson; prepared on a machine with pip, see
# scripts/gpu_check_wheels.sh), then runs a few LAD and GRPO steps of a ~0.5B model with
# DeepSpeed ZeRO-2 bf16 and prints the step-time split, tokens/s, MFU and the LAD/GRPO ratio.
#   bash scripts/gpu_check.sh [--steps 3 --prompts 16 --group 8 --prompt-len 256 --response-len 512]
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 DS_BUILD_OPS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, deepspeed, pydantic; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__, 'pydantic', pydantic.__version__)"
exec python3 scripts/gpu_check.py "$@"
