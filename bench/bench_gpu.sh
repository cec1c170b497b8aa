#!/usr/bin/env bash
# One GPU, full-size SVD-XT 1.1 (random weights), 1024x576, 25 frames, fp16:
#  1. every stage (image encoder, VAE encoder, one guided UNet step, one 14-frame decode chunk): time and
#     torch.cuda.max_memory_allocated, ours beside diffusers' and beside the memory model's figures;
#  2. with E2E=1, also the whole pipeline against diffusers' StableVideoDiffusionPipeline on the same weights
#     (bench/compare.py: ms per step, decode time, peak memory, frames agree; ~25 GB of disk for two copies).
set -euo pipefail
here="$(dirname "$0")"
python3 "$here/gpu_stages.py" --device cuda --model full --dtype fp16 --frames 25 --width 1024 --height 576 --chunk 14 "$@"
if [ "${E2E:-0}" = "1" ]; then
  python3 "$here/compare.py" --device cuda --model full --dtype fp16 --frames 25 --width 1024 --height 576 --steps 4 --rounds 2
fi
