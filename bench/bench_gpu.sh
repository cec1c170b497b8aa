#!/usr/bin/env bash
# One GPU, full-size SVD-XT 1.1 (random weights), 1024x576, 25 frames, fp16:
#  1. every stage (image encoder, VAE encoder, one guided UNet step, one 14-frame decode chunk): time and
#     torch.cuda.max_memory_allocated, ours beside diffusers' and beside the memory model's figures;
#  2. seconds per guided step, ours eager and compiled (CUDA graphs) beside diffusers' eager, and the
#     attention kernel each runs (flash / efficient / cudnn / math);
#  3. with E2E=1, also the whole pipeline against diffusers' StableVideoDiffusionPipeline on the same weights,
#     ours eager and compiled (bench/compare.py: ms per step, decode time, end-to-end seconds, peak memory,
#     frames agree; ~25 GB of disk for two copies).
set -euo pipefail
here="$(dirname "$0")"
common=(--device cuda --model full --dtype fp16 --frames 25 --width 1024 --height 576)
python3 "$here/gpu_stages.py" "${common[@]}" --chunk 14 "$@"
python3 "$here/gpu_speed.py" "${common[@]}"
if [ "${E2E:-0}" = "1" ]; then
  python3 "$here/compare.py" "${common[@]}" --steps "${E2E_STEPS:-25}" --rounds 1 --compile
fi
