#!/usr/bin/env bash
# CPU, medium model, fp32 (and bf16 where the CPU has it), the same random weights for every implementation:
#  1. time per sampling step: ours eager and compiled, diffusers eager, ComfyUI's own SVD UNet (COMFYUI_PATH),
#     alternating rounds in one process (issue 12 target: ours compiled <= 0.8 x the fastest peer);
#  2. with E2E=1, the whole pipeline against diffusers' StableVideoDiffusionPipeline (bench/compare.py).
set -euo pipefail
here="$(dirname "$0")"
python3 "$here/cpu_speed.py" --frames 8 --size 128 --rounds 5 "$@"
if [ "${E2E:-0}" = "1" ]; then
  python3 "$here/compare.py" --device cpu --model medium --dtype fp32 --frames 8 --width 128 --height 128 --steps 8 --rounds 5
fi
