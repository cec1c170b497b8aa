"""Shared test setup: the repository root on sys.path and a CPU thread count that suits CI's 2 cores."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# One fp32 CPU Linear route for every test and every process a test starts (the CLI's, Ray's workers): the
# per-machine probe (svd_core.speed) could pick another route in another process, and results that tests
# compare bit for bit across processes would differ in the last bits. tests/test_speed.py tests the probe.
os.environ.setdefault("SVD_CORE_LINEAR", "onednn")



@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator: tests pass randomness in, nothing seeds globally."""
    return torch.Generator().manual_seed(1234)
