"""Module paths of earlier releases, still importable: `import svd_core.pipeline`, `from svd_core.load import
load_models` or `svd_core.batch.run(...)` in a user's script keep working after the modules moved into
sub-packages. One table; each old path is the new module itself (imported only when asked for)."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

# old module -> where it lives now (pipeline's public names are all in svd_core itself). svd_core.generate and
# svd_core.extend are the functions of those names, as they always were.
MOVED: dict[str, str] = {
    "svd_core.unet": "svd_core.nets.unet", "svd_core.vae": "svd_core.nets.vae",
    "svd_core.image_encoder": "svd_core.nets.image_encoder", "svd_core.layers": "svd_core.nets.layers",
    "svd_core.embeddings": "svd_core.nets.embeddings", "svd_core.lean": "svd_core.nets.pieces",
    "svd_core.edm": "svd_core.diffusion.edm", "svd_core.sampling": "svd_core.diffusion.sampling",
    "svd_core.guidance": "svd_core.diffusion.guidance", "svd_core.parallel": "svd_core.diffusion.parallel",
    "svd_core.pipeline": "svd_core", "svd_core.keyframes": "svd_core.video.keyframes",
    "svd_core.load": "svd_core.weights.load", "svd_core.layout": "svd_core.weights.layout",
    "svd_core.models": "svd_core.weights.models", "svd_core.random_weights": "svd_core.weights.random_weights",
    "svd_core.convert": "svd_core.weights.convert", "svd_core.cli": "svd_core.app.cli",
    "svd_core.batch": "svd_core.app.batch",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and hands over the module that now holds it."""

    def __init__(self) -> None:
        self._own_specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
                  ) -> importlib.machinery.ModuleSpec | None:
        head = next((old for old in MOVED if fullname == old or fullname.startswith(old + ".")), None)
        if head is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        head = next(old for old in MOVED if spec.name == old or spec.name.startswith(old + "."))
        module = importlib.import_module(MOVED[head] + spec.name[len(head):])
        self._own_specs[spec.name] = module.__spec__  # the import system sets the alias's spec on it next
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._own_specs.pop(module.__spec__.name if module.__spec__ else "", module.__spec__)


def install() -> None:
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
