"""bench/gpu_report.py, the table bench/bench_gpu.sh prints, as a CPU smoke run (the tiny model, 64x64, 4 frames).

Under the `slow` marker: a child process building both implementations and running them end to end (about a
minute on 2 cores). The figures themselves are the GPU's to give; here every row, column and JSON key must be
there, and every figure that a CPU run measures must be a positive finite number.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_report.py"
ROWS = ("image_encoder", "vae_encoder", "unet_step_eager", "unet_step_compiled", "decode_chunk", "end_to_end")
LABELS = ("image encoder", "VAE encoder", "guided UNet step (eager)", "guided UNet step (compiled)",
          "decode chunk (4 frames)", "end to end (2 steps)")
COLUMNS = ("ours s", "diffusers s", "model s", "ours/model", "model GiB", "ours GiB", "diffusers GiB",
           "attention (ours)")
KEYS = ("label", "ours_s", "diffusers_s", "model_s", "ratio", "model_gib", "ours_gib", "diffusers_gib", "attention",
        "diffusers_attention", "notes")


def _positive(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.mark.slow  # both implementations built and run end to end on a CPU: about a minute on 2 cores
def test_smoke_run_prints_the_table_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--model", "tiny", "--width", "64", "--height", "64",
           "--frames", "4", "--steps", "2", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    text = done.stdout + done.stderr
    header = next(line for line in text.splitlines() if "ours/model" in line)
    assert all(c in header for c in COLUMNS), header
    assert all(any(line.startswith(label) for line in text.splitlines()) for label in LABELS), text[-3000:]

    report = json.loads(out.read_text())
    assert set(report) >= {"settings", "rows", "sections_s", "skipped", "elapsed_s"}
    settings = report["settings"]
    assert (settings["width"], settings["height"], settings["frames"], settings["steps"], settings["chunk"]) == (
        64, 64, 4, 2, 4)
    assert settings["device_model"] == "h100_sxm" and settings["device_model_note"]
    rows = report["rows"]
    assert tuple(rows) == ROWS
    for key, row in rows.items():
        assert set(row) >= set(KEYS), (key, row)
        assert _positive(row["model_s"]) and _positive(row["model_gib"]), (key, row)
        assert row["ours_gib"] is None and row["diffusers_gib"] is None  # no CUDA, no max_memory_allocated
        if key == "unet_step_compiled":  # compiling on a CPU takes minutes: off unless --compile yes
            assert row["ours_s"] is None
            continue
        assert _positive(row["ours_s"]) and _positive(row["ratio"]), (key, row)
        assert _positive(row["diffusers_s"]), (key, row)
    for key in ("image_encoder", "vae_encoder", "unet_step_eager", "decode_chunk"):
        assert rows[key]["attention"], key  # the CPU's flash kernel, or "none seen"
    assert rows["unet_step_eager"]["diffusers_attention"]
    assert any("compiled" in s for s in report["skipped"])
    assert all(_positive(v) for v in report["sections_s"].values())
