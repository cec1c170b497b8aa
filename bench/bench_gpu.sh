#!/usr/bin/env bash
# One GPU, full-size SVD-XT 1.1 (random weights), 1024x576, 25 frames, fp16, in under 8 minutes: one table
# (bench/gpu_report.py) of the image encoder, the VAE encoder, one guided UNet step eager and compiled (CUDA
# graphs), one 14-frame decode chunk and the whole video (the preset's 30 steps, decode chunk 14): our seconds
# beside diffusers', the time model's prediction (bench/time_model.py) for the closest modelled GPU and
# measured / predicted, the memory model's activation peak (bench/memory.py) beside max_memory_allocated, and
# the attention kernel that ran. Also written as JSON: $BENCH_GPU_JSON, else ${OUT:-.}/bench_gpu.json.
# BUDGET (seconds, default 450) is the wall-clock guard: sections that would end past it are skipped and listed.
# With E2E=1, afterwards also bench/compare.py: both pipelines on the same weights from files, frames compared
# (~25 GB of disk, several more minutes: outside the 8-minute budget).
set -euo pipefail
here="$(dirname "$0")"
common=(--device cuda --model full --frames 25 --width 1024 --height 576)
python3 "$here/gpu_report.py" "${common[@]}" --dtype fp16 --budget "${BUDGET:-450}" \
  --json "${BENCH_GPU_JSON:-${OUT:-.}/bench_gpu.json}" "$@"
if [ "${E2E:-0}" = "1" ]; then
  python3 "$here/compare.py" "${common[@]}" --dtype fp16 --steps "${E2E_STEPS:-25}" --rounds 1 --compile
fi
