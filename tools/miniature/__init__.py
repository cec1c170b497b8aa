"""The miniature SVD: the pack's own networks at a small size, trained here on synthetic clips whose motion is
known (data.py), so that quality can be measured in numbers (bench/miniature_quality.py)."""
