"""Run the pack on a CUDA device that is not there: CPU work for real, CUDA work on fake tensors, every op audited.

    with FakeCuda(compute=torch.float16) as run:
        models = build_models(config, device="cuda", dtype=torch.float16)
        frames = generate(models, image, num_steps=2)
    run.assert_clean()          # or inspect run.findings

torch's FakeTensorMode gives tensors shapes, dtypes and devices but no data, so a full-size model "on CUDA"
costs no memory and runs on a machine without a GPU. Here only the CUDA side is fake: an operator whose
tensors are all real CPU tensors (and that makes nothing on CUDA) runs for real, so the seed contract's CPU
generators, schedules and every host-side decision compute real numbers, exactly as beside a real GPU. An
operator that touches a CUDA tensor (or makes one) runs on fake tensors and is audited:

- `device`: a tensor meets one on another device (the CPU tensor of an op on CUDA tensors), other than the
  copies between devices themselves (`_to_copy`, `copy_`);
- `dtype`: a floating dtype on CUDA that the run did not plan: not the compute dtype, not float32 (the EDM
  preconditioning and the GroupNorm statistics), not a storage dtype (fp8 weights) on its way to a cast (a
  view, `detach`, a copy);
- `float64`: any float64 tensor on CUDA (consumer cards run it at 1/64 of float32's rate);
- `host_read`: the host waits for the device: a CUDA tensor copied to the CPU, `.item()`, `bool(t)`,
  `torch.equal`... each with where it happened (the innermost frames of the pack's own code), and whether
  it happened inside a sampling step (`in_step`, from the first UNet call of a
  sampling until an encoder or the decoder runs: `watch(models)`).

`FakeCuda.records` (with `record=True`) keeps every CUDA operator with its argument and output metadata, the
trace a time model can read.
"""
from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map, tree_map_only

__all__ = ["FakeCuda", "Finding", "OpRecord"]

REPO = Path(__file__).resolve().parents[1]
aten = torch.ops.aten

# operators whose whole purpose is to move or cast between devices and dtypes
_COPIES = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default, aten._copy_from_and_resize.default,
           aten.to.dtype, aten.to.device, aten.to.dtype_layout}
# operators that read no element (a storage dtype may pass through them on its way to a cast)
_METADATA = {torch.ops.prim.device.default, aten.clone.default}
# operators that hand a device value to the host
_SCALAR_READS = {aten._local_scalar_dense.default, aten.is_nonzero.default, aten.equal.default,
                 aten.item.default}


@dataclass(frozen=True)
class Finding:
    """One thing the audit found: kind (device / dtype / float64 / host_read), the operator, what, where."""

    kind: str
    op: str
    detail: str
    where: str
    in_step: bool

    def __str__(self) -> str:
        step = " (inside a sampling step)" if self.in_step else ""
        return f"{self.kind}{step}: {self.op}: {self.detail}\n    at {self.where}"


@dataclass(frozen=True)
class OpRecord:
    """One CUDA operator: its name, (shape, dtype) of each tensor argument and output."""

    op: str
    inputs: tuple[tuple[tuple[int, ...], torch.dtype], ...]
    outputs: tuple[tuple[tuple[int, ...], torch.dtype], ...]


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _on_cuda(t: torch.Tensor) -> bool:
    return t.device.type == "cuda"


def _where() -> str:
    """The innermost frames outside torch and this harness that led here (the pack's own code, or the host's)."""
    frames = [f for f in traceback.extract_stack()[:-3]
              if "site-packages" not in f.filename and "/bench/" not in f.filename and "/tests/" not in f.filename
              and not f.filename.startswith("<")]
    return " <- ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames[-3:]))


def _short(filename: str) -> str:
    path = Path(filename)
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else "/".join(path.parts[-3:])


def _target_device(flat: list[Any], kwargs: dict[str, Any]) -> torch.device | None:
    """The device an operator makes its output on, when it names one (`device=`, or `to`'s positional one);
    `flat`: its flattened arguments."""
    device = kwargs.get("device")
    if device is None:
        device = next((a for a in flat if isinstance(a, torch.device)), None)
    return torch.device(device) if device is not None else None


# A fake tensor of at most this many elements made from known values keeps its real value (its shadow), so that
# the host can read it (a schedule read once before a loop) and what follows on the CPU computes real numbers.
SHADOW_NUMEL = 4096
_SHADOW = "_fake_cuda_shadow"


def _shadow_of(t: torch.Tensor) -> torch.Tensor | None:
    return t.__dict__.get(_SHADOW) if isinstance(t, FakeTensor) else t


_WRITES: dict[Any, tuple[tuple[int, str], ...]] = {}


def _written(func: Any, args: Any, kwargs: Any) -> list[torch.Tensor]:
    """The tensor arguments `func` writes into (in-place and out= operators)."""
    writes = _WRITES.get(func)
    if writes is None:
        schema = getattr(func, "_schema", None)
        writes = tuple((i, a.name) for i, a in enumerate(schema.arguments if schema is not None else ())
                       if a.alias_info is not None and a.alias_info.is_write)
        _WRITES[func] = writes
    found = [args[i] if i < len(args) else kwargs.get(name) for i, name in writes]
    return [t for t in found if isinstance(t, torch.Tensor)]


def _host_read(func: Any, tensors: list[torch.Tensor], target: torch.device | None) -> bool:
    """Whether `func` hands device data to the host: a scalar read, or a copy of a CUDA tensor to the CPU."""
    if func in _SCALAR_READS:
        return True
    if func not in _COPIES or not any(_on_cuda(t) for t in tensors):
        return False
    if target is not None:
        return target.type == "cpu"
    return func is aten.copy_.default and not _on_cuda(tensors[0])


@dataclass
class _Plan:
    compute: torch.dtype
    storage: frozenset[torch.dtype]
    record: bool
    findings: list[Finding] = field(default_factory=list)
    records: list[OpRecord] = field(default_factory=list)
    in_step: bool = False
    ops: int = 0


class _Split(TorchDispatchMode):
    """Above FakeTensorMode: real CPU operators run for real (fake mode unset), the rest go on to fake mode."""

    def __init__(self, plan: _Plan, fake: FakeTensorMode) -> None:
        super().__init__()
        self.plan = plan
        self.fake = fake

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        flat = tree_flatten((args, kwargs))[0]
        tensors = [t for t in flat if isinstance(t, torch.Tensor)]
        target = _target_device(flat, kwargs)
        real_inputs = [t for t in tensors if not isinstance(t, FakeTensor)]
        fake = len(real_inputs) < len(tensors) or (target is not None and target.type == "cuda")
        if not fake:
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        cuda = any(_on_cuda(t) for t in tensors) or (target is not None and target.type == "cuda")
        if cuda:
            self._audit(func, tensors, target)
        if _host_read(func, tensors, target):  # the host gets real numbers: the shadow's (or zeros)
            return self._run_on_shadows(func, args, kwargs, read=True)
        # real inputs become fake ones first (fake mode would run an op on real inputs only for real)
        if real_inputs:
            fake_args = tree_map_only(torch.Tensor, self._fake, (args, kwargs))
            out = func(*fake_args[0], **fake_args[1])
        else:
            out = func(*args, **kwargs)
        if cuda:
            self._after(func, tensors, out)
        self._shadow(func, args, kwargs, tensors, out)
        return out

    def _fake(self, t: torch.Tensor) -> torch.Tensor:
        return t if isinstance(t, FakeTensor) else self.fake.from_tensor(t)

    def _shadow(self, func: Any, args: Any, kwargs: Any, tensors: list[torch.Tensor], out: Any) -> None:
        """Keep the real value of a small fake result computed from known values (a schedule, a scale)."""
        outs = [t for t in _tensors(out) if isinstance(t, FakeTensor)]
        if (not outs or any(t.numel() > SHADOW_NUMEL for t in outs)
                or not all(_shadow_of(t) is not None for t in tensors if isinstance(t, FakeTensor))):
            for t in _written(func, args, kwargs):  # its shadow no longer holds
                if isinstance(t, FakeTensor):
                    t.__dict__.pop(_SHADOW, None)
            return
        try:
            real = self._run_on_shadows(func, args, kwargs, read=False)
        except Exception:  # a value the CPU cannot compute (a CUDA-only op): unknown, never wrong
            return
        for fake_t, real_t in zip(outs, [t for t in _tensors(real)], strict=False):
            fake_t.__dict__[_SHADOW] = real_t

    def _run_on_shadows(self, func: Any, args: Any, kwargs: Any, *, read: bool) -> Any:
        """func on the CPU with every fake tensor replaced by its shadow (zeros where none is known: those
        reads are findings already) and every CUDA device by the CPU."""
        def real(x: Any) -> Any:
            if isinstance(x, FakeTensor):
                shadow = _shadow_of(x)
                if shadow is None:
                    if read:
                        self._find("unknown_read", func, f"{tuple(x.shape)} {x.dtype} read without a known value")
                    shadow = torch.zeros(x.shape, dtype=x.dtype)
                return shadow
            if isinstance(x, torch.device) and x.type == "cuda":
                return torch.device("cpu")
            return x

        with unset_fake_temporarily():
            real_args, real_kwargs = tree_map(real, args), tree_map(real, kwargs)
            device = real_kwargs.get("device")
            if device is not None and torch.device(device).type == "cuda":
                real_kwargs["device"] = "cpu"
            return func(*real_args, **real_kwargs)

    def _find(self, kind: str, func: Any, detail: str) -> None:
        self.plan.findings.append(Finding(kind, str(func), detail, _where(), self.plan.in_step))

    def _audit(self, func: Any, tensors: list[torch.Tensor], target: torch.device | None) -> None:
        plan = self.plan
        plan.ops += 1
        if _host_read(func, tensors, target):
            shapes = ", ".join(str(tuple(t.shape)) for t in tensors if _on_cuda(t))
            self._find("host_read", func, f"CUDA tensor {shapes} read on the host")
            return
        if func in _COPIES:
            return
        cpu = [t for t in tensors if not _on_cuda(t)]
        if cpu:
            shapes = ", ".join(f"{tuple(t.shape)} {t.dtype}" for t in cpu)
            self._find("device", func, f"CPU tensor(s) {shapes} meet CUDA tensors")

    def _after(self, func: Any, tensors: list[torch.Tensor], out: Any) -> None:
        plan = self.plan
        outputs = [t for t in _tensors(out) if _on_cuda(t)]
        allowed = {plan.compute, torch.float32}
        reads_storage = func in _COPIES or func in _METADATA or getattr(func, "is_view", False)
        for t in [*tensors, *outputs]:
            if not _on_cuda(t) or not t.dtype.is_floating_point:
                continue
            if t.dtype is torch.float64:
                self._find("float64", func, f"float64 tensor {tuple(t.shape)} on CUDA")
            elif t.dtype not in allowed and not (reads_storage and t.dtype in plan.storage):
                self._find("dtype", func, f"{t.dtype} tensor {tuple(t.shape)} on CUDA (planned: "
                                          f"{', '.join(str(d) for d in sorted(allowed | plan.storage, key=str))})")
        if plan.record:
            plan.records.append(OpRecord(str(func), tuple((tuple(t.shape), t.dtype) for t in tensors),
                                         tuple((tuple(t.shape), t.dtype) for t in _tensors(out))))


class FakeCuda:
    """The context described in the module docstring. `compute`: the dtype the run computes in on CUDA;
    `storage`: dtypes weights may be stored in and cast from (fp8)."""

    def __init__(self, compute: torch.dtype = torch.float16, storage: tuple[torch.dtype, ...] = (),
                 record: bool = False) -> None:
        self.plan = _Plan(compute, frozenset(storage), record)
        self._stack: contextlib.ExitStack | None = None

    @property
    def findings(self) -> list[Finding]:
        return self.plan.findings

    @property
    def records(self) -> list[OpRecord]:
        return self.plan.records

    @property
    def cuda_ops(self) -> int:
        """How many operators ran on (fake) CUDA."""
        return self.plan.ops

    def __enter__(self) -> FakeCuda:
        stack = contextlib.ExitStack()
        fake = stack.enter_context(FakeTensorMode(allow_non_fake_inputs=True))
        stack.enter_context(_Split(self.plan, fake))
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._stack is not None
        self._stack.__exit__(*exc)
        self._stack = None

    def watch(self, models: Any) -> None:
        """Mark sampling steps from the networks' calls: from a UNet call on, until the flow's sampling stage
        returns (svd_core.video.flow.sample, wrapped while the context lasts) or an encoder or the decoder
        runs (a sampler called directly returns into the next stage)."""
        from svd_core.video import flow

        def start(*_: Any) -> None:
            self.plan.in_step = True

        def stop(*_: Any) -> None:
            self.plan.in_step = False

        models.unet.register_forward_pre_hook(start)
        for part in (models.image_encoder, models.vae.encoder, models.vae.decoder):
            part.register_forward_pre_hook(stop)
        sample = flow.sample
        if getattr(sample, "_fake_cuda_watch", False):
            return

        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                return sample(*args, **kwargs)
            finally:
                stop()

        watched._fake_cuda_watch = True  # type: ignore[attr-defined]
        flow.sample = watched  # type: ignore[assignment]
        assert self._stack is not None, "watch() inside the FakeCuda context"
        self._stack.callback(setattr, flow, "sample", sample)

    def kinds(self, *kinds: str) -> list[Finding]:
        return [f for f in self.findings if f.kind in kinds]

    def report(self, limit: int = 12) -> str:
        seen: dict[str, int] = {}
        for f in self.findings:
            seen[str(f)] = seen.get(str(f), 0) + 1
        lines = [f"{n} x {text}" for text, n in list(seen.items())[:limit]]
        return "\n".join(lines) if lines else "no findings"

    def assert_clean(self) -> None:
        if self.findings:
            raise AssertionError(f"{len(self.findings)} finding(s) on fake CUDA:\n{self.report()}")
