"""One video on two processes: classifier-free guidance split across two ranks ("CFG parallel").

Every guided step evaluates the UNet on the unconditional and the conditional inputs (one batch of 2BT
frames in `GuidedDenoiser`). With `cfg_parallel=group` (a torch.distributed process group of two ranks)
rank 0 evaluates the unconditional half and rank 1 the conditional half, each a batch of BT frames, and
the two halves are exchanged with one all_gather per evaluation. Both ranks then hold the same guided
estimate and run the same sampler update, so they stay in step without any other exchange. The frames are
those of one process up to the rounding of a half-size batch.

Launch: `torchrun --nproc-per-node 2 -m svd_core generate ... --cfg-parallel` (NCCL on GPUs, one per
rank; gloo on CPUs), or call `generate(..., cfg_parallel=group)` from each of two ranks yourself.
"""
from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from .sampling import Denoiser

__all__ = ["SplitGuidanceBatch", "check_group", "init_from_env", "rank", "finish"]

RANKS = 2  # unconditional, conditional


def rank(group: Any) -> int:
    """This process's rank in `group`."""
    import torch.distributed as dist

    return int(dist.get_rank(group))


def check_group(group: Any) -> int:
    """This process's rank in `group`, which must have exactly two ranks."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("cfg_parallel needs an initialised torch.distributed process group "
                         "(torch.distributed.init_process_group)")
    size = dist.get_world_size(group)
    if size != RANKS:
        raise ValueError(f"cfg_parallel needs a process group of {RANKS} ranks (uncond, cond), got {size}")
    return rank(group)


class SplitGuidanceBatch:
    """The batched denoiser of `GuidedDenoiser` computed on two ranks: called with the doubled batch
    [x; x] (uncond half first), this rank evaluates only its own half with `local` (its conditioning bound
    in) and all_gathers both halves."""

    def __init__(self, local: Denoiser, group: Any) -> None:
        self.local = local
        self.group = group
        self.rank = check_group(group)

    def __call__(self, x2: Tensor, sigma2: Tensor) -> Tensor:
        import torch.distributed as dist

        n = x2.shape[0] // RANKS
        mine = slice(self.rank * n, (self.rank + 1) * n)
        out = self.local(x2[mine], sigma2[mine]).contiguous()
        halves = [torch.empty_like(out) for _ in range(RANKS)]
        dist.all_gather(halves, out, group=self.group)
        return torch.cat(halves)


def init_from_env(device: torch.device) -> tuple[Any, torch.device]:
    """The process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR...), and this rank's device:
    NCCL and cuda:LOCAL_RANK when `device` is a GPU, gloo otherwise."""
    import torch.distributed as dist

    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise ValueError("--cfg-parallel runs on two processes: launch with torchrun --nproc-per-node 2 -m svd_core "
                         "generate ... --cfg-parallel")
    if int(os.environ["WORLD_SIZE"]) != RANKS:
        raise ValueError(f"--cfg-parallel needs exactly {RANKS} processes, torchrun started {os.environ['WORLD_SIZE']}")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.group.WORLD, device


def finish() -> None:
    """Tear down the process group `init_from_env` made, if there is one."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
