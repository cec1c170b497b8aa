#!/usr/bin/env bash
# One GPU: full-size random-weight SVD-XT 1.1, 25 frames at 1024x576, fp16: ms per UNet step, decode time and
# peak memory for svd_core beside diffusers' StableVideoDiffusionPipeline (needs ~25 GB of disk for the two copies).
exec python3 "$(dirname "$0")/compare.py" --device cuda --model full --dtype fp16 --frames 25 --width 1024 --height 576 --steps 4 --rounds 2 "$@"
