"""Shared test helpers: nonzero random weights and a tiny-model factory."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def randomize_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter with nonzero random values, in place (tests only).

    The reference zero-initialises output layers, which would hide wiring errors, so every
    tensor here is drawn from a distribution that is never zero: weights ~ N(0, 1/fan_in),
    norm scales ~ 1 + 0.1 N(0,1), everything else ~ 0.1 N(0,1) (mix factors, biases, embeddings).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            parent = name.rsplit(".", 2)[-2] if name.count(".") else ""
            if p.ndim >= 2:
                fan_in = p[0].numel()
                v = r / math.sqrt(fan_in)
            elif leaf == "weight" and ("norm" in parent or parent.startswith("ln")):
                v = 1.0 + 0.1 * r
            else:
                v = 0.1 * r
            v = torch.where(v == 0, torch.full_like(v, 1e-3), v)
            p.copy_(v.to(p.dtype))
    return module


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
