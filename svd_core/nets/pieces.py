"""Memory-lean execution: the one place where big activations are cut into pieces.

Every function here computes what the plain layer sequence computes, element for element (only the
summation order of a reduction may differ), while holding a piece of the big activations at a time.
Piece sizes come from `PieceSizes`, constants (or sizes the user sets with `use_piece_sizes`), never from
free memory, so a video never depends on the machine it was made on.

Three kinds of pieces:
- frame groups (`frame_groups`): per-frame layers (2-D convolutions, per-frame GroupNorm, spatial
  attention) see a few frames at a time;
- row chunks (`row_chunks`): token-wise layers (LayerNorm, feed-forward, temporal attention) see a few
  thousand tokens at a time;
- spatial slices (`temporal_block_`): temporal layers ((k, 1, 1) convolutions and the GroupNorm over
  (channels, T, H, W)) see a band of rows of every frame; the GroupNorm statistics are gathered over
  the whole clip first (`GroupStats`), then applied slice by slice, so the clip stays the unit of
  temporal mixing.

GroupNorm in float32 (the reference's GroupNorm32) upcasts one piece at a time: no full-size float32
copy of an activation is ever made. Parameters touched outside a layer call are cast per call
(`cast_param`), so weights kept on another device or stored in another dtype (ComfyUI's low-VRAM
loading, fp8 storage) work unchanged.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "PieceSizes", "DEFAULT_PIECE_SIZES", "current_piece_sizes", "use_piece_sizes", "frame_groups", "row_chunks",
    "map_frame_groups",
    "cast_param", "group_norm32", "layer_norm32", "GroupStats", "attention", "FrameGroups", "temporal_block_",
]

# Largest batch of one SDPA call. The reference splits its xformers calls at 32768 rows
# (sgm/modules/attention.py MemoryEfficientCrossAttention, xformers issue 845); temporal attention at
# 1024x576 has B*H*W = 2*9216 rows, larger sizes pass CUDA's 65535 grid limit on some kernels.
MAX_ATTENTION_BATCH = 32768


@dataclass(frozen=True)
class PieceSizes:
    """Piece sizes, in elements of the widest tensor a piece makes (2**25 elements = 64 MiB in fp16).

    The defaults keep one UNet step of SVD-XT at 1024x576 under 6 GiB and one 14-frame decode chunk
    under 4 GiB (fp16, weights included; bench/memory.py: 5.75 and 3.90 GiB), while each piece is large
    enough to keep a GPU busy: a guided step's modelled time is within 5 % of the uncut step's on every GPU
    bench/time_model.py models (A100 +2.6 %, H100 PCIe +3.1 %, H100 SXM +3.6 %, RTX 4090 +2.3 %; the
    earlier 2**25 everywhere cost +9 % to +17 %). At small sizes a whole tensor is one piece: nothing is cut.
    """

    group_elements: int = 2**27  # frames x widest channels x H x W of one frame group
    token_elements: int = 2**28  # tokens x widest feature width of one row chunk (feed-forward: 8 x C)
    slice_elements: int = 2**27  # frames x channels x rows x W of one spatial slice of a temporal layer
    score_elements: int = 2**26  # batch x heads x queries x keys of one attention call (if it kept scores)

    def __post_init__(self) -> None:
        for name in ("group_elements", "token_elements", "slice_elements", "score_elements"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PieceSizes.{name} must be a positive integer, got {value!r}")


DEFAULT_PIECE_SIZES = PieceSizes()
_PIECE_SIZES: contextvars.ContextVar[PieceSizes] = contextvars.ContextVar("svd_core_piece_sizes",
                                                                          default=DEFAULT_PIECE_SIZES)


def current_piece_sizes() -> PieceSizes:
    """The piece sizes in force: DEFAULT_PIECE_SIZES, or those of the innermost `use_piece_sizes` block."""
    return _PIECE_SIZES.get()


@contextlib.contextmanager
def use_piece_sizes(sizes: PieceSizes) -> Iterator[PieceSizes]:
    """Run the block with other piece sizes (tests use tiny pieces to exercise every cut)."""
    token = _PIECE_SIZES.set(sizes)
    try:
        yield sizes
    finally:
        _PIECE_SIZES.reset(token)


# The names of earlier releases (when this module was svd_core.lean), kept so that user code still runs:
# `svd_core.Plan` and `svd_core.use_plan` are public.
Plan = PieceSizes
DEFAULT_PLAN = DEFAULT_PIECE_SIZES
current_plan = current_piece_sizes
use_plan = use_piece_sizes


def _pieces(n: int, per_item: int, budget: int) -> list[slice]:
    """Consecutive slices of range(n), each of at most max(1, budget // per_item) items."""
    step = max(1, budget // max(1, per_item))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def frame_groups(n: int, per_frame: int) -> list[slice]:
    """Groups of the n frames of a "(b t)" batch for per-frame layers; per_frame: elements of the
    widest tensor one frame makes."""
    return _pieces(n, per_frame, current_piece_sizes().group_elements)


def row_chunks(n: int, per_row: int) -> list[slice]:
    """Chunks of n token rows for token-wise layers; per_row: the widest feature width."""
    return _pieces(n, per_row, current_piece_sizes().token_elements)


def _memory_format(x: Tensor) -> torch.memory_format:
    if x.ndim == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def map_frame_groups(fn: Callable[[slice], Tensor], n: int, per_frame: int) -> Tensor:
    """cat([fn(g) for g in frame_groups(n, per_frame)]) without holding the pieces twice: each piece is
    written into the output as soon as it is made. With one group, fn's own result is returned."""
    groups = frame_groups(n, per_frame)
    first = fn(groups[0])
    if len(groups) == 1:
        return first
    out = torch.empty((n, *first.shape[1:]), dtype=first.dtype, device=first.device,
                      memory_format=_memory_format(first))
    out[groups[0]] = first
    del first
    for g in groups[1:]:
        out[g] = fn(g)
    return out


# --- parameters and float32 norms ---------------------------------------------------------------

def cast_param(p: Tensor, like: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A parameter used outside its layer's own call, on `like`'s device, in `dtype` (default `like`'s).
    A no-op when it already is; otherwise the weight may live elsewhere (low-VRAM loading) or be stored
    in another dtype (fp8), and is cast for this call only."""
    return p.to(device=like.device, dtype=like.dtype if dtype is None else dtype)


def _affine32(norm: nn.Module, like: Tensor) -> tuple[Tensor | None, Tensor | None]:
    w = getattr(norm, "weight", None)
    b = getattr(norm, "bias", None)
    return (None if w is None else cast_param(w, like, torch.float32),
            None if b is None else cast_param(b, like, torch.float32))


# A norm layer is typed nn.Module (a host's classes subclass torch.nn's), whose attributes type as
# Tensor | Module: its plain fields are read through getattr.
def _groups(norm: nn.Module) -> int:
    return int(getattr(norm, "num_groups"))  # noqa: B009


def _eps(norm: nn.Module) -> float:
    return float(getattr(norm, "eps"))  # noqa: B009


def group_norm32(norm: nn.Module, x: Tensor) -> Tensor:
    """GroupNorm computed in float32 and cast back (sgm/modules/diffusionmodules/util.py GroupNorm32),
    affine parameters upcast too; `norm` is a GroupNorm layer. Per sample: call it on a frame group,
    never on a whole clip."""
    w, b = _affine32(norm, x)
    return F.group_norm(x.float(), _groups(norm), w, b, _eps(norm)).to(x.dtype)


def layer_norm32(norm: nn.Module, x: Tensor) -> Tensor:
    """LayerNorm computed in float32 and cast back (open_clip's LayerNorm for half precision)."""
    w, b = _affine32(norm, x)
    shape = tuple(getattr(norm, "normalized_shape"))  # noqa: B009 (see _groups)
    return F.layer_norm(x.float(), shape, w, b, _eps(norm)).to(x.dtype)


def _merge_dtype(device: torch.device) -> torch.dtype:
    """float64 on the CPU; float32 on every GPU. Apple's MPS has no float64, and consumer CUDA cards run it at
    1/64 of float32's rate (an RTX 4090: 1.3 against 82.6 TFLOP/s, NVIDIA's Ada whitepaper): none is used in
    a GPU's sampling loop (bench/fake_cuda.py audits it). Chan's update is stable in float32 too; the merged
    statistics differ from float64's in the last float32 bits only."""
    return torch.float64 if device.type == "cpu" else torch.float32


class GroupStats:
    """Mean and reciprocal std of each (video, group) of a (B, C, T, H, W) clip, gathered piece by piece.

    Each piece gives its count, mean and M2 (float32, torch.var_mean); pieces are merged in float64 (float32
    on GPUs, `_merge_dtype`) with Chan, Golub and LeVeque's pairwise update (1979): n = na + nb, d = mb - ma,
    m = ma + d nb / n, M2 = M2a + M2b + d^2 na nb / n. The variance is biased (M2 / n), as GroupNorm's.
    """

    def __init__(self, num_groups: int) -> None:
        self.num_groups = num_groups
        self.count = 0
        self.mean: Tensor | None = None  # (B, G) float64 on the CPU
        self.m2: Tensor | None = None

    def add(self, piece: Tensor) -> None:
        """piece: (B, C, T, h, W), any rows of every frame of the clip."""
        x = piece.float().unflatten(1, (self.num_groups, -1))  # (B, G, C/G, T, h, W)
        var, mean = torch.var_mean(x, dim=(2, 3, 4, 5), correction=0)
        n = x[0, 0].numel()
        acc = _merge_dtype(x.device)
        var, mean = var.to(acc), mean.to(acc)
        if self.mean is None or self.m2 is None:
            self.count, self.mean, self.m2 = n, mean, var * n
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + var * n + delta * delta * (self.count * n / total)
        self.count = total

    def normalize(self, piece: Tensor, norm: nn.Module) -> Tensor:
        """GroupNorm of a piece with the clip's statistics, affine applied, in float32 (the reference's
        GroupNorm32 before its cast back), in the form torch's kernels use: x * scale + shift with
        scale = rstd * weight and shift = bias - mean * scale, per channel."""
        if self.mean is None or self.m2 is None:
            raise RuntimeError("GroupStats.normalize before any piece was added")
        b, c = piece.shape[:2]
        rstd = torch.rsqrt(self.m2 / self.count + _eps(norm))  # (B, G), in the merge dtype
        mean = self.mean
        per_channel = c // self.num_groups
        rstd_c = rstd.repeat_interleave(per_channel, dim=1).to(device=piece.device, dtype=torch.float32)  # (B, C)
        mean_c = mean.repeat_interleave(per_channel, dim=1).to(device=piece.device, dtype=torch.float32)
        w, bias = _affine32(norm, piece)
        scale = rstd_c if w is None else rstd_c * w
        shift = -mean_c * scale if bias is None else bias - mean_c * scale
        y = piece.float() * scale.view(b, c, 1, 1, 1)  # a new tensor even when piece is float32
        return y.add_(shift.view(b, c, 1, 1, 1))


# --- attention -----------------------------------------------------------------------------------

def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v for (N, heads, L, d) tensors (scaled_dot_product_attention's default
    scale), split over the batch (CUDA grid limit) and, off CUDA, over queries (so that even a backend that
    keeps the score matrix holds at most PieceSizes.score_elements of it). Each query row is independent: exact.

    On CUDA the fused kernels (flash, memory-efficient, cuDNN) never hold the scores, so cutting queries saves
    nothing there and costs much: each call re-reads every key and value, and at 1024x576 the cut made ~300
    calls of 29 queries per spatial attention layer, +59 % on a guided step on an A100 (bench/time_model.py
    --pieces). There only the batch is cut, at the grid limit."""
    n, heads, lq, lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    fused = q.device.type == "cuda"
    score_elements = current_piece_sizes().score_elements
    batch_step = (MAX_ATTENTION_BATCH if fused
                  else min(MAX_ATTENTION_BATCH, max(1, score_elements // max(1, heads * lk))))
    q_step = lq if fused else max(1, score_elements // max(1, min(n, batch_step) * heads * lk))
    if n <= batch_step and lq <= q_step:
        return F.scaled_dot_product_attention(q, k, v)
    out = q.new_empty(q.shape[:-1] + v.shape[-1:])
    for i in range(0, n, batch_step):
        for j in range(0, lq, q_step):
            out[i:i + batch_step, :, j:j + q_step] = F.scaled_dot_product_attention(
                q[i:i + batch_step, :, j:j + q_step], k[i:i + batch_step], v[i:i + batch_step])
    return out


# --- frames held as separate groups (the temporal decoder) ----------------------------------------

class FrameGroups:
    """A "(b t) c h w" activation held as a list of frame groups, so that a layer that changes its size
    frees each input group as soon as its frames are done: at an upsampling the old and the new
    resolution coexist for one group only, not for the whole clip."""

    def __init__(self, groups: Sequence[Tensor]) -> None:
        if not groups:
            raise ValueError("FrameGroups needs at least one group")
        self.groups: list[Tensor] = list(groups)

    @property
    def num_frames(self) -> int:
        return sum(g.shape[0] for g in self.groups)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.num_frames, *self.groups[0].shape[1:])

    def map_(self, fn: Callable[[Tensor], Tensor], per_frame: int) -> None:
        """Replace the frames x by fn(x), frame group by frame group (per_frame: elements of the widest
        tensor one frame makes), releasing every input group once it is consumed."""
        old, self.groups = self.groups, []
        old.reverse()
        while old:
            g = old.pop()
            for s in frame_groups(g.shape[0], per_frame):
                self.groups.append(fn(g[s]))
            del g

    def rows(self, r: slice) -> Tensor:
        """Rows r of every frame, gathered: (N, C, rows, W)."""
        parts = [g[:, :, r] for g in self.groups]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @property
    def rows_are_views(self) -> bool:
        """Whether `rows` returns a view (one group) rather than a gathered copy."""
        return len(self.groups) == 1

    def set_rows(self, r: slice, value: Tensor) -> None:
        """Write rows r of every frame from value (N, C, rows, W)."""
        start = 0
        for g in self.groups:
            g[:, :, r].copy_(value[start:start + g.shape[0]])
            start += g.shape[0]

    def cat(self) -> Tensor:
        return self.groups[0] if len(self.groups) == 1 else torch.cat(self.groups)


# --- temporal residual blocks on spatial slices ------------------------------------------------------

def _norm_act_conv(stats: GroupStats, norm: nn.Module, conv: nn.Module, piece: Tensor) -> Tensor:
    """conv(SiLU(GroupNorm32(piece))) with clip statistics: normalised in float32, cast back before
    the SiLU (GroupNorm32's cast), then the (k, 1, 1) convolution."""
    y = stats.normalize(piece, norm).to(piece.dtype)
    return conv(F.silu(y, inplace=True))


def temporal_block_(
    clip: FrameGroups | Tensor,
    num_frames: int,
    in_layers: nn.Sequential,
    out_layers: nn.Sequential,
    *,
    spatial_weight: Tensor,
    temporal_weight: Tensor,
    emb: Tensor | None = None,
    keep_intermediate: bool = False,
) -> None:
    """Overwrite x with spatial_weight * x + temporal_weight * (x + out_layers(in_layers(x) + emb)), where
    in_layers = [GroupNorm32, SiLU, Conv3d (k, 1, 1)] and out_layers = [GroupNorm32, SiLU, (Dropout,)
    Conv3d] run over time (openaimodel.py ResBlock with dims=3, the `time_stack` of SVD's UNet and
    temporal decoder, and the learned blend of their VideoResBlocks).

    x is `clip`, frames folded "(b t) c h w" with t = num_frames: a tensor, written in place, or
    FrameGroups. Work runs on bands of rows of every frame: the GroupNorm statistics of x, then of the
    block's intermediate h, are gathered over the whole clip first; h is kept (`keep_intermediate`,
    one clip-sized tensor) or computed again in the last pass. `emb` (B, C, T, 1, 1) is the per-frame
    embedding added to h (the UNet's; None for the decoder). The weights are 0-dim or 1-element.
    """
    groups = clip if isinstance(clip, FrameGroups) else FrameGroups([clip])
    n, c, height, width = groups.shape
    if num_frames < 1 or n % num_frames:
        raise ValueError(f"{n} frames are not a whole number of clips of num_frames={num_frames}")
    norm_in, conv_in = in_layers[0], in_layers[2]
    norm_out, conv_out = out_layers[0], out_layers[len(out_layers) - 1]

    def piece(r: slice) -> Tensor:  # (B, C, T, rows, W)
        return rearrange(groups.rows(r), "(b t) c h w -> b c t h w", t=num_frames)

    slices = _pieces(height, n * c * width, current_piece_sizes().slice_elements)
    if len(slices) == 1:  # small enough to be one piece: the plain layer sequence
        xs = piece(slices[0])
        h = in_layers[2](F.silu(group_norm32(norm_in, xs)))
        if emb is not None:
            h = h.add_(emb.to(h.dtype))
        temporal = out_layers[len(out_layers) - 1](F.silu(group_norm32(norm_out, h)))
        del h
        temporal = temporal.add_(xs).mul_(temporal_weight.to(xs.dtype))
        out = xs.mul_(spatial_weight.to(xs.dtype)).add_(temporal)
        if not groups.rows_are_views:
            groups.set_rows(slices[0], rearrange(out, "b c t h w -> (b t) c h w"))
        return
    stats_x = GroupStats(_groups(norm_in))
    for r in slices:
        stats_x.add(piece(r))

    def inner(xs: Tensor) -> Tensor:
        h = _norm_act_conv(stats_x, norm_in, conv_in, xs)
        return h if emb is None else h.add_(emb.to(h.dtype))

    stats_h = GroupStats(_groups(norm_out))
    kept: list[Tensor] = []
    for r in slices:
        h = inner(piece(r))
        stats_h.add(h)
        if keep_intermediate:
            kept.append(h)
        del h
    kept.reverse()
    for r in slices:
        xs = piece(r)
        h = kept.pop() if keep_intermediate else inner(xs)
        temporal = _norm_act_conv(stats_h, norm_out, conv_out, h)
        del h
        temporal = temporal.add_(xs).mul_(temporal_weight.to(xs.dtype))  # temporal_weight * (x + residual)
        out = xs.mul_(spatial_weight.to(xs.dtype)).add_(temporal)  # spatial_weight * x + ..., in place
        del temporal
        if not groups.rows_are_views:  # else xs was a view: written in place already
            groups.set_rows(r, rearrange(out, "b c t h w -> (b t) c h w"))

