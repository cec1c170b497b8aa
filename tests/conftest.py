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



@pytest.fixture
def rng() -> torch.Generator:
    """A seeded CPU generator: tests pass randomness in, nothing seeds globally."""
    return torch.Generator().manual_seed(1234)
