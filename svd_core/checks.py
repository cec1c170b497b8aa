"""Checks of user-given numbers, shared by the command line and the ComfyUI nodes.

Each function returns the problems it finds as messages that name the input (through `label`, so the
command line says `--min-cfg` where a node says `min_cfg`), with the value and what was expected; an
empty list means the values are fine. Nothing is run before they pass: a bad value never reaches torch.
"""
from __future__ import annotations

import math
from collections.abc import Callable

from .diffusion.sampling import LCM_TRAIN_STEPS, SAMPLERS, schedule_length

# Image sides must be multiples of 64 (scripts/sampling/simple_video_sample.py rounds sizes down to
# multiples of 64; the UNet halves the 1/8 latent three times).
SIZE_MULTIPLE = 64
MAX_SIDE = 8192  # the nodes' widget limit: 8192 px is 1024 latent rows, far beyond what SVD was trained at
MAX_FRAMES = 1024

# (lowest, highest) accepted value of each numeric input; see the nodes' tooltips for their meaning.
LIMITS: dict[str, tuple[float, float]] = {
    "fps": (1, 1000),
    "motion_bucket_id": (0, 1023),
    "cond_aug": (0.0, 10.0),
    "frames": (1, MAX_FRAMES),
    "steps": (1, 1000),
    "min_cfg": (0.0, 100.0),
    "max_cfg": (0.0, 100.0),
    "sigma_min": (1e-4, 100.0),
    "sigma_max": (0.01, 1e4),
    "rho": (0.1, 100.0),
    "denoise": (0.001, 1.0),  # below 1, the schedule is steps / denoise long: bounded
}
INTEGERS = frozenset({"fps", "motion_bucket_id", "frames", "steps"})

Label = Callable[[str], str]


def _same(name: str) -> str:
    return name


def check_size(name: str, value: object, label: Label = _same) -> str | None:
    """Error text when an image side is not a positive multiple of 64 up to MAX_SIDE, else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{label(name)} must be an integer multiple of {SIZE_MULTIPLE}, got {value!r}"
    if value < SIZE_MULTIPLE or value % SIZE_MULTIPLE != 0 or value > MAX_SIDE:
        return f"{label(name)} must be a positive multiple of {SIZE_MULTIPLE} up to {MAX_SIDE}, got {value}"
    return None


def check_number(name: str, value: object, label: Label = _same) -> str | None:
    """Error text when `value` is not a finite number within LIMITS[name] (a whole one for INTEGERS)."""
    lo, hi = LIMITS[name]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return f"{label(name)} must be a finite number, got {value!r}"
    if name in INTEGERS and not float(value).is_integer():
        return f"{label(name)} must be a whole number, got {value}"
    if not lo <= value <= hi:
        return f"{label(name)} must be between {lo} and {hi}, got {value}"
    return None


def conditioning_errors(width: object, height: object, fps: object, motion_bucket_id: object, cond_aug: object,
                        label: Label = _same) -> list[str]:
    """All problems with the conditioning inputs."""
    errors = [check_size("width", width, label), check_size("height", height, label),
              check_number("fps", fps, label), check_number("motion_bucket_id", motion_bucket_id, label),
              check_number("cond_aug", cond_aug, label)]
    return [e for e in errors if e is not None]


def schedule_errors(sampler: str, steps: object, denoise: object = 1.0, label: Label = _same) -> list[str]:
    """Problems with the number of steps that only the sampler's schedule knows of: the lcm sampler walks the
    consistency model's 40 training levels (sampling.lcm_sigmas), so the schedule of steps / denoise levels
    (sampling.schedule_length) may not exceed 40."""
    if sampler not in SAMPLERS:
        return [f"{label('sampler')} must be one of {tuple(SAMPLERS)}, got {sampler!r}"]
    if SAMPLERS[sampler].schedule != "lcm" or check_number("steps", steps) or check_number("denoise", denoise):
        return []
    n, d = int(steps), float(denoise)  # type: ignore[call-overload, arg-type]
    total = schedule_length(n, d)  # steps and denoise are valid here: this does not raise
    if total <= LCM_TRAIN_STEPS:
        return []
    spread = "" if d == 1.0 else f" ({label('steps')} / {label('denoise')} = {total} levels)"
    return [f"{label('steps')} must be at most {LCM_TRAIN_STEPS} for the lcm sampler (the consistency model's "
            f"training levels), got {n}{spread}"]


def sampler_errors(steps: object, min_cfg: object, max_cfg: object, sigma_min: object, sigma_max: object,
                   rho: object, denoise: object, label: Label = _same, sampler: str = "euler") -> list[str]:
    """All problems with the sampling inputs, including sigma_min < sigma_max and `schedule_errors`."""
    values = {"steps": steps, "min_cfg": min_cfg, "max_cfg": max_cfg, "sigma_min": sigma_min,
              "sigma_max": sigma_max, "rho": rho, "denoise": denoise}
    found = [e for e in (check_number(k, v, label) for k, v in values.items()) if e is not None]
    if not found and sigma_min >= sigma_max:  # type: ignore[operator]
        found.append(f"{label('sigma_min')} must be smaller than {label('sigma_max')}, "
                     f"got {sigma_min} >= {sigma_max}")
    return found + schedule_errors(sampler, steps, denoise, label)


# --- devices and dtypes -------------------------------------------------------------------------------

STORAGE_ONLY = {"fp8_e4m3fn", "fp8_e5m2"}  # config.STORAGE_ONLY_DTYPES by name: weights stored, never computed in


def _cuda_dtypes(index: int) -> list[str]:
    """The compute dtypes CUDA device `index` runs: bf16 from compute capability 8.0 (Ampere) on."""
    import torch

    major, _ = torch.cuda.get_device_capability(index)
    return ["fp32", "fp16", "bf16"] if major >= 8 else ["fp32", "fp16"]


def device_errors(device: object, dtypes: dict[str, str], label: Label = _same) -> list[str]:
    """Problems of running on `device` ("cpu", "cuda", "cuda:1", "mps", a torch.device) in `dtypes`
    ({input name: dtype name}, e.g. {"dtype": "bf16", "vae_dtype": "fp32"}): a device that is not a device
    or not on this machine, an fp8 compute dtype (fp8 is a storage dtype), a dtype the device cannot run
    (bf16 on a CUDA card older than Ampere). Checked before anything is loaded."""
    import torch

    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, ValueError):
        return [f"{label('device')} is '{device}', which is not a device; expected cpu, cuda, cuda:N or mps"]
    errors: list[str] = []
    supported = ["fp32", "fp16", "bf16"]
    where = f"{label('device')} '{device}'"
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = dev.index if dev.index is not None else 0
        if count == 0:
            return [f"{where}: this machine has no CUDA device (torch {torch.__version__}"
                    f"{', built without CUDA' if torch.version.cuda is None else ''}); use cpu"]
        if index >= count:
            return [f"{where}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"]
        supported = _cuda_dtypes(index)
        where += f" ({torch.cuda.get_device_name(index)})"
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            return [f"{where}: this machine has no Apple MPS device; use cpu"]
        supported = ["fp32", "fp16", "bf16"]
    elif dev.type != "cpu":
        return [f"{where} is not a device the pack runs on; expected cpu, cuda, cuda:N or mps"]
    for name, dtype in dtypes.items():
        if dtype in STORAGE_ONLY:
            errors.append(f"{label(name)} is {dtype}, a storage dtype: weights can be stored in it, but nothing "
                          f"computes in it; compute in one of {', '.join(supported)}")
        elif dtype not in supported:
            errors.append(f"{label(name)} is {dtype}, which {where} cannot run; it runs {', '.join(supported)}")
    return errors
