#!/usr/bin/env bash
# CPU: svd_core vs diffusers on the same random medium-size model (issue 3 targets: time <= 0.9, memory <= 1.0).
exec python3 "$(dirname "$0")/compare.py" --device cpu --model medium --dtype fp32 --frames 8 --width 128 --height 128 --steps 8 --rounds 5 "$@"
