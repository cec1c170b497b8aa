"""Train the miniature SVD (tools/miniature/train.py): `python tools/train_miniature.py --help`."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: svd_core and tools.miniature

from tools.miniature.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
