"""The spatio-temporal UNet of Stable Video Diffusion (the reference's `VideoUNet`).

Every spatial layer of an SD-style UNet is followed by a temporal twin, and the two are blended
with a learned scalar: out = a * spatial + (1 - a) * temporal, a = sigmoid(mix_factor).

Frames travel folded into the batch, `(B*T, C, H, W)`, with `num_frames = T` passed alongside;
every unfold is a named `rearrange`. Attribute names equal the official checkpoint keys under
`model.diffusion_model.` (tests/data/svd_xt_1_1.keys.json lists them), so a checkpoint loads with a
strict `load_state_dict` after stripping that prefix.

Layers come from an injected operations namespace `ops` (Linear, Conv2d, Conv3d, GroupNorm, LayerNorm;
default torch.nn), as ComfyUI's own models take theirs, so a host can cast or offload weights per call.
Big activations are cut into pieces by `svd_core.nets.pieces` (frame groups, token chunks, spatial slices),
which computes the same numbers with a fraction of the memory.

Sources (Stability-AI/generative-models):
- sgm/modules/diffusionmodules/video_model.py: VideoUNet, VideoResBlock;
- sgm/modules/diffusionmodules/openaimodel.py: ResBlock, Downsample, Upsample;
- sgm/modules/diffusionmodules/util.py: GroupNorm32, AlphaBlender (timestep_embedding is svd_core.nets.embeddings);
- sgm/modules/attention.py: SpatialTransformer, BasicTransformerBlock, CrossAttention, GEGLU;
- sgm/modules/video_attention.py: SpatialVideoTransformer, VideoTransformerBlock;
- scripts/sampling/configs/svd_xt_1_1.yaml: network_config (the sizes of `UNetConfig.svd_xt`).

The reference's `image_only_indicator` is dropped: SVD inference always passes zeros, and with
zeros its "learned_with_images" merge is exactly a = sigmoid(mix_factor) (util.py AlphaBlender).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from . import pieces
from .embeddings import timestep_embedding
from .layers import Ops, Upsample


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the VideoUNet; defaults are SVD-XT 1.1 (svd_xt_1_1.yaml network_config)."""

    in_channels: int = 8  # yaml in_channels: 4 noisy latent + 4 conditioning-frame latent
    out_channels: int = 4  # yaml out_channels
    model_channels: int = 320  # yaml model_channels
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # yaml channel_mult
    num_res_blocks: int = 2  # yaml num_res_blocks
    # levels whose downsampling 1, 2, 4 is in yaml attention_resolutions [4, 2, 1]
    attention_levels: tuple[int, ...] = (0, 1, 2)
    num_head_channels: int = 64  # yaml num_head_channels
    transformer_depth: int = 1  # yaml transformer_depth
    context_dim: int = 1024  # yaml context_dim (OpenCLIP ViT-H image embedding)
    vector_embed_dim: int = 256  # ConcatTimestepEmbedderND outdim, for each of fps_id, motion_bucket_id, cond_aug
    # the widths of the embeddings concatenated into y, in order, when they are not three of vector_embed_dim:
    # SV3D_u (256,) (cond_aug), SV3D_p (256, 512, 512) (cond_aug, polars_rad, azimuths_rad); sv3d_*.yaml
    vector_dims: tuple[int, ...] | None = None
    video_kernel_size: int = 3  # yaml video_kernel_size [3, 1, 1]: temporal kernel k, spatial 1x1
    num_groups: int = 32  # GroupNorm groups: util.py normalization, attention.py Normalize

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding (video_model.py: model_channels * 4)."""
        return 4 * self.model_channels

    @property
    def vector_widths(self) -> tuple[int, ...]:
        """The width of each embedding in y, in order (SVD: three of vector_embed_dim)."""
        return self.vector_dims if self.vector_dims is not None else (self.vector_embed_dim,) * 3

    @property
    def adm_in_channels(self) -> int:
        """Width of the vector conditioning y (yaml adm_in_channels: 768 = 3 * 256 for SVD, 256 for SV3D_u,
        1280 for SV3D_p)."""
        return sum(self.vector_widths)

    @classmethod
    def sv3d(cls, family: str) -> UNetConfig:
        """SV3D_u / SV3D_p (sv3d_*.yaml network_config): SVD's sizes with their own vector widths."""
        return cls(vector_dims=(256,) if family == "sv3d_u" else (256, 512, 512))

    @classmethod
    def svd_xt(cls) -> UNetConfig:
        """SVD-XT 1.1 (also SVD and SVD-XT 1.0: their UNets have the same sizes)."""
        return cls()

    @classmethod
    def tiny(cls) -> UNetConfig:
        """A random-weights test model: two levels, attention on both, runs on a CPU in milliseconds."""
        return cls(
            model_channels=64,
            channel_mult=(1, 2),
            num_res_blocks=1,
            attention_levels=(0, 1),
            context_dim=32,
            vector_embed_dim=16,
        )

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Sequence[int]]) -> UNetConfig:
        """Read every size from the tensor shapes of a UNet state dict with our names (no prefix).

        The head width is not visible in shapes and is taken as 64 (yaml num_head_channels);
        `num_groups` likewise stays 32. Raises ValueError when the names are not an SVD UNet's.
        """
        names = list(shapes)
        if any(k.startswith("model.diffusion_model.") for k in names):
            raise ValueError(
                "UNetConfig.from_shapes expects names without the 'model.diffusion_model.' prefix; "
                "strip it first"
            )
        if "input_blocks.0.0.weight" not in shapes or "out.2.weight" not in shapes:
            raise ValueError(
                "not a UNet state dict: 'input_blocks.0.0.weight' or 'out.2.weight' is missing "
                f"({len(names)} tensors, first {names[:3]})"
            )
        if not any(".time_stack." in k for k in names):
            raise ValueError(
                "not an SVD spatio-temporal UNet: no 'time_stack' tensors (an image UNet such as "
                "SD 1.5 or SDXL?)"
            )
        model_channels, in_channels = (int(s) for s in shapes["input_blocks.0.0.weight"][:2])
        out_channels = int(shapes["out.2.weight"][0])

        def block_ids(prefix: str) -> list[int]:
            found = {int(m.group(1)) for k in names if (m := re.match(prefix + r"(\d+)\.", k))}
            return sorted(found)

        def out_width(block: str) -> int:
            """Output channels of a res-block, from the first of its tensors that is present."""
            for leaf in ("out_layers.3.weight", "out_layers.3.bias", "in_layers.2.weight", "emb_layers.1.weight"):
                if block + leaf in shapes:
                    return int(shapes[block + leaf][0])
            raise ValueError(f"no res-block at '{block}' (expected '{block}out_layers.3.weight')")

        inputs = block_ids("input_blocks.")
        down_ids = [i for i in inputs if f"input_blocks.{i}.0.op.weight" in shapes]
        num_res_blocks = down_ids[0] - 1 if down_ids else len(inputs) - 1
        num_levels = len(down_ids) + 1
        expected = 1 + num_levels * num_res_blocks + (num_levels - 1)
        if num_res_blocks < 1 or inputs != list(range(expected)):
            raise ValueError(
                f"input_blocks are numbered {inputs}; an SVD UNet with {num_levels} levels and "
                f"{num_res_blocks} res-blocks per level has input_blocks 0..{expected - 1}"
            )
        channel_mult: list[int] = []
        attention_levels: list[int] = []
        depth: int | None = None
        for level in range(num_levels):
            first = 1 + level * (num_res_blocks + 1)  # first res-block of this level
            width = out_width(f"input_blocks.{first}.0.")
            if width % model_channels:
                raise ValueError(f"level {level} has {width} channels, not a multiple of {model_channels}")
            channel_mult.append(width // model_channels)
            if f"input_blocks.{first}.1.proj_in.weight" in shapes:
                attention_levels.append(level)
                n = len(block_ids(f"input_blocks.{first}.1.transformer_blocks."))
                if depth is not None and n != depth:
                    raise ValueError(f"transformer depth differs between levels ({depth} vs {n})")
                depth = n
        mid = "middle_block.1."
        if depth is None:
            depth = len(block_ids(mid + "transformer_blocks."))
        context_key = mid + "transformer_blocks.0.attn2.to_k.weight"
        if context_key not in shapes:
            raise ValueError(f"no '{context_key}': the middle block has no cross-attention")
        adm = int(shapes["label_emb.0.0.weight"][1]) if "label_emb.0.0.weight" in shapes else -1
        if adm <= 0:
            raise ValueError(f"'label_emb.0.0.weight' takes {adm} inputs; SVD's y is 3 embeddings of equal width")
        # SVD's y is three embeddings of equal width; any other width is kept whole here, and the loader
        # splits it by the family its other tensors tell (SV3D: config.SV3D_VECTOR_DIMS)
        vector = {"vector_embed_dim": adm // 3} if adm % 3 == 0 else {"vector_embed_dim": adm, "vector_dims": (adm,)}
        # any temporal conv tells the kernel (k, 1, 1); read from whichever is present, so that a
        # loader can still name a single missing tensor itself
        pattern = re.compile(r"\.time_stack\.(in|out)_layers\.[23]\.weight$")
        kernel = next((v for k, v in shapes.items() if pattern.search(k)), None)
        if kernel is None or len(kernel) != 5:
            raise ValueError("no temporal conv ('*.time_stack.in_layers.2.weight', 5-D) to read the kernel size from")
        return cls(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=tuple(channel_mult),
            num_res_blocks=num_res_blocks,
            attention_levels=tuple(attention_levels),
            transformer_depth=depth,
            context_dim=int(shapes[context_key][1]),
            video_kernel_size=int(kernel[2]),
            **vector,  # type: ignore[arg-type]
        )


class AlphaBlender(nn.Module):
    """a * spatial + (1 - a) * temporal with a = sigmoid(mix_factor) (util.py AlphaBlender)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix_factor = nn.Parameter(torch.full((1,), 0.5))  # merge_factor default 0.5

    def weights(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """(a, 1 - a) in like's dtype, computed in float32."""
        alpha = torch.sigmoid(pieces.cast_param(self.mix_factor, like, torch.float32))
        return alpha.to(like.dtype), (1.0 - alpha).to(like.dtype)

    def forward(self, spatial: Tensor, temporal: Tensor) -> Tensor:
        a, b = self.weights(spatial)
        return a * spatial + b * temporal


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + embedding, GroupNorm-SiLU-conv, + skip (openaimodel.py ResBlock).

    With `temporal_kernel=None` it is the 2-D block on (N, C, H, W) with emb (N, E). With an int k it
    is the 3-D `time_stack` block on (B, C, T, H, W): kernel (k, 1, 1), padding (k//2, 0, 0), and a
    per-frame emb (B, T, E) (the reference's exchange_temb_dims). Its GroupNorms compute in float32
    (util.py GroupNorm32, eps 1e-5).
    """

    def __init__(
        self, channels: int, emb_channels: int, out_channels: int, num_groups: int,
        temporal_kernel: int | None = None, ops: Ops = nn,
    ) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Module:
            if temporal_kernel is None:
                return ops.Conv2d(cin, cout, 3, padding=1)
            return ops.Conv3d(cin, cout, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0))

        self.in_layers = nn.Sequential(ops.GroupNorm(num_groups, channels), nn.SiLU(), conv(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_channels, out_channels))
        # index 2 is the reference's Dropout (p=0 in SVD): kept as Identity so index 3 names the conv
        self.out_layers = nn.Sequential(
            ops.GroupNorm(num_groups, out_channels), nn.SiLU(), nn.Identity(), conv(out_channels, out_channels)
        )
        self.skip_connection: nn.Module = nn.Identity()
        if out_channels != channels:
            conv_1x1 = ops.Conv3d if temporal_kernel is not None else ops.Conv2d
            self.skip_connection = conv_1x1(channels, out_channels, 1)

    def block(self, x: Tensor, e: Tensor) -> Tensor:
        """The block on x with its projected embedding e already shaped to broadcast over x."""
        h = self.in_layers[2](F.silu(pieces.group_norm32(self.in_layers[0], x)))
        h = h + e.to(h.dtype)
        h = self.out_layers[3](F.silu(pieces.group_norm32(self.out_layers[0], h)))
        return self.skip_connection(x) + h

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        e = self.emb_layers(emb)
        shape = "b t c -> b c t 1 1" if x.ndim == 5 else "n c -> n c 1 1"  # one embedding per frame
        return self.block(x, rearrange(e, shape))


class VideoResBlock(ResBlock):
    """Spatial ResBlock, then a temporal ResBlock over frames, blended (video_model.py VideoResBlock).

    Memory: the spatial block runs a frame group at a time (its GroupNorm32 upcasts one group), with the
    concatenation of an output block's skip made per group too; the temporal block runs on spatial
    slices (pieces.temporal_block_) and blends into the spatial result in place.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, num_groups: int,
                 video_kernel_size: int, ops: Ops = nn) -> None:
        super().__init__(channels, emb_channels, out_channels, num_groups, ops=ops)
        self.time_stack = ResBlock(out_channels, emb_channels, out_channels, num_groups, video_kernel_size, ops)
        self.time_mixer = AlphaBlender()

    def forward(self, x: Tensor, emb: Tensor, num_frames: int,  # type: ignore[override]
                skip: Tensor | None = None) -> Tensor:
        """x (B*T, C, H, W); `skip`, when given, is concatenated to x along channels first (an output
        block's input, cat([h, skip]) in openaimodel.py), one frame group at a time."""
        return self.run([x] if skip is None else [x, skip], emb, num_frames)

    def run(self, inputs: list[Tensor], emb: Tensor, num_frames: int) -> Tensor:
        """forward on inputs = [x] or [x, skip], a list that is emptied once the spatial block has used
        it, so that a caller that keeps no other reference frees x and skip before the temporal block."""
        x = inputs[0]
        n, _, height, width = x.shape
        cin = sum(t.shape[1] for t in inputs)
        cout = int(getattr(self.out_layers[3], "out_channels"))  # noqa: B009 (typed nn.Module: Tensor | Module)
        e = rearrange(self.emb_layers(emb), "n c -> n c 1 1")

        def spatial_group(g: slice) -> Tensor:
            xg = inputs[0][g] if len(inputs) == 1 else torch.cat([t[g] for t in inputs], dim=1)
            return self.block(xg, e[g])

        del x
        spatial = pieces.map_frame_groups(spatial_group, n, max(cin, cout) * height * width)  # (B*T, C, H, W)
        inputs.clear()
        a, b = self.time_mixer.weights(spatial)
        e_t = rearrange(self.time_stack.emb_layers(emb), "(b t) c -> b c t 1 1", t=num_frames)
        pieces.temporal_block_(spatial, num_frames, self.time_stack.in_layers, self.time_stack.out_layers,
                             spatial_weight=a, temporal_weight=b, emb=e_t, keep_intermediate=True)
        return spatial


class Downsample(nn.Module):
    """3x3 conv with stride 2 (openaimodel.py Downsample, conv_resample=True)."""

    def __init__(self, channels: int, ops: Ops = nn) -> None:
        super().__init__()
        self.op = ops.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Attention(nn.Module):
    """Multi-head attention, q from x and k, v from context (attention.py CrossAttention, no qkv bias)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int, ops: Ops = nn) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = ops.Linear(query_dim, inner, bias=False)
        self.to_k = ops.Linear(context_dim, inner, bias=False)
        self.to_v = ops.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([ops.Linear(inner, query_dim)])  # reference: Sequential(Linear, Dropout)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        ctx = x if context is None else context
        q, k, v = (
            rearrange(p, "n s (h d) -> n h s d", h=self.heads) for p in (self.to_q(x), self.to_k(ctx), self.to_v(ctx))
        )
        out = pieces.attention(q, k, v)  # (N, heads, S, head_dim); softmax scale head_dim**-0.5, as the reference's
        return self.to_out[0](rearrange(out, "n h s d -> n s (h d)"))

    def single_key(self, context: Tensor) -> Tensor:
        """The output for a context of ONE token, (N, 1, D) -> (N, 1, query_dim), whatever the queries.

        Softmax over a single key is exactly 1, so every query receives that key's value: q, k and the
        scores are not needed. SVD's context is always one token (the CLIP image embedding), so this is
        every cross-attention of the model, spatial and temporal; the result is the same, bit for bit
        up to the GEMM's rounding, and the temporal one no longer projects a copy per position.
        """
        return self.to_out[0](self.to_v(context))


class GEGLU(nn.Module):
    """Linear to 2*inner, value * gelu(gate), exact (erf) gelu (attention.py GEGLU)."""

    def __init__(self, dim: int, inner: int, ops: Ops = nn) -> None:
        super().__init__()
        self.proj = ops.Linear(dim, 2 * inner)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU with inner width 4*dim, then Linear (attention.py FeedForward, glu=True, mult=4)."""

    def __init__(self, dim: int, dim_out: int, ops: Ops = nn) -> None:
        super().__init__()
        # index 1 is the reference's Dropout (p=0 in SVD)
        self.net = nn.Sequential(GEGLU(dim, 4 * dim, ops), nn.Identity(), ops.Linear(4 * dim, dim_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _add_ff_(z: Tensor, norm: nn.Module, ff: FeedForward) -> None:
    """z += ff(norm(z)) for z (..., C), in token chunks: the GEGLU's 8C-wide projection of a chunk only."""
    c = z.shape[-1]
    flat = z.view(-1, c)
    for r in pieces.row_chunks(flat.shape[0], 8 * c):
        part = flat[r]
        part += ff(norm(part))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention, feed-forward (attention.py BasicTransformerBlock)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, ops: Ops = nn) -> None:
        super().__init__()
        self.attn1 = Attention(dim, dim, heads, head_dim, ops)
        self.ff = FeedForward(dim, dim, ops)
        self.attn2 = Attention(dim, context_dim, heads, head_dim, ops)
        self.norm1 = ops.LayerNorm(dim)  # LayerNorm eps 1e-5: torch default, as in the reference
        self.norm2 = ops.LayerNorm(dim)
        self.norm3 = ops.LayerNorm(dim)

    def update_(self, x: Tensor, context: Tensor) -> None:
        """x (N, S, C) <- the block's output, in place: self-attention a frame group at a time, the
        feed-forward in token chunks."""
        n, s, c = x.shape
        for g in pieces.frame_groups(n, 4 * s * c):  # q, k, v and the output of one group
            part = x[g]
            part += self.attn1(self.norm1(part))
        if context.shape[1] == 1:  # one context token: see Attention.single_key (norm2(x) is not needed)
            x += self.attn2.single_key(context)  # (N, 1, C) broadcast over the queries
        else:
            for g in pieces.frame_groups(n, 4 * s * c):
                part = x[g]
                part += self.attn2(self.norm2(part), context[g])
        _add_ff_(x, self.norm3, self.ff)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        out = x.clone()
        self.update_(out, context)
        return out


class TemporalTransformerBlock(TransformerBlock):
    """The same block run along frames, with an extra residual feed-forward first
    (video_attention.py VideoTransformerBlock with ff_in=True, i.e. yaml extra_ff_mix_layer)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int, ops: Ops = nn) -> None:
        super().__init__(dim, heads, head_dim, context_dim, ops)
        self.norm_in = ops.LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim, ops)

    def update_(self, z: Tensor, context: Tensor) -> None:
        """z (R, t, C), each row one position's t frames, <- the block's output, in place; context
        (R or 1, L, D), each row's context."""
        _add_ff_(z, self.norm_in, self.ff_in)
        z += self.attn1(self.norm1(z))
        if context.shape[1] == 1:  # one context token: its value, broadcast over rows and frames
            z += self.attn2.single_key(context)
        else:
            z += self.attn2(self.norm2(z), context.expand(z.shape[0], -1, -1))
        _add_ff_(z, self.norm3, self.ff)

    def mix_(self, x: Tensor, frame_emb: Tensor, context: Tensor, num_frames: int, mixer: AlphaBlender) -> None:
        """x (B*T, S, C) <- mixer(x, block(x + frame_emb)), in place, a chunk of positions at a time.

        frame_emb (B*T, 1, C); context (B, L, D): each video's first-frame context, seen at every position.
        """
        n, s, c = x.shape
        t = num_frames
        a, b = mixer.weights(x)
        video = rearrange(x, "(b t) s c -> b t s c", t=t)
        emb = rearrange(frame_emb, "(b t) 1 c -> b t 1 c", t=t)
        for i in range(n // t):
            for r in pieces.row_chunks(s, 8 * c * t):  # positions; each has t tokens, widest width 8C
                view = video[i, :, r]  # (t, s', C), a view of x
                z = rearrange(view + emb[i], "t s c -> s t c").contiguous()  # "(b s) t c" rows of this chunk
                self.update_(z, context[i:i + 1])
                z = z.mul_(b)  # (1 - a) * temporal
                view.mul_(a).add_(rearrange(z, "s t c -> t s c"))  # a * spatial + (1 - a) * temporal

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:  # type: ignore[override]
        """x (B*T, S, C); context (B, L, D): each video's first-frame context, seen at every position."""
        s = x.shape[1]
        z = rearrange(x, "(b t) s c -> (b s) t c", t=num_frames).contiguous()
        self.update_(z, repeat(context, "b l d -> (b s) l d", s=s))
        return rearrange(z, "(b s) t c -> (b t) s c", s=s)


class SpatialVideoTransformer(nn.Module):
    """Spatial transformer over positions, temporal transformer over frames, blended
    (video_attention.py SpatialVideoTransformer with use_linear, use_spatial_context)."""

    def __init__(self, channels: int, cfg: UNetConfig, ops: Ops = nn) -> None:
        super().__init__()
        heads, head_dim = channels // cfg.num_head_channels, cfg.num_head_channels
        inner = heads * head_dim
        self.norm = ops.GroupNorm(cfg.num_groups, channels, eps=1e-6)  # attention.py Normalize: eps 1e-6, no fp32 cast
        self.proj_in = ops.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, head_dim, cfg.context_dim, ops) for _ in range(cfg.transformer_depth)]
        )
        self.time_stack = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, head_dim, cfg.context_dim, ops)
             for _ in range(cfg.transformer_depth)]
        )
        # frame-index embedding: width channels, hidden 4 * channels (video_attention.py time_pos_embed)
        self.time_pos_embed = nn.Sequential(ops.Linear(channels, 4 * channels), nn.SiLU(),
                                            ops.Linear(4 * channels, channels))
        self.time_mixer = AlphaBlender()
        self.proj_out = ops.Linear(inner, channels)

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
        n, c, h, w = x.shape  # (B*T, C, H, W)
        inner = int(getattr(self.proj_in, "out_features"))  # noqa: B009 (typed nn.Module: Tensor | Module)
        # the temporal cross-attention sees the first frame's context of each video, at every position
        first = rearrange(context, "(b t) l d -> b t l d", t=num_frames)[:, 0]  # (B, L, D)
        frames = repeat(torch.arange(num_frames, device=x.device), "t -> (b t)", b=n // num_frames)
        frame_emb = rearrange(self.time_pos_embed(timestep_embedding(frames, c).to(x.dtype)), "n c -> n 1 c")

        def tokens(g: slice) -> Tensor:  # (n', H*W, inner)
            return self.proj_in(rearrange(self.norm(x[g]), "n c h w -> n (h w) c"))

        z = pieces.map_frame_groups(tokens, n, max(c, inner) * h * w).contiguous()  # (B*T, H*W, inner)
        # equal lengths by construction; plain zip (no strict=) is what every torch.compile version traces
        for block, time_block in zip(self.transformer_blocks, self.time_stack):  # noqa: B905
            assert isinstance(block, TransformerBlock) and isinstance(time_block, TemporalTransformerBlock)
            block.update_(z, context)
            time_block.mix_(z, frame_emb, first, num_frames, self.time_mixer)

        def back(g: slice) -> Tensor:  # (n', C, H, W), channels-last like x
            return rearrange(self.proj_out(z[g]), "n (h w) c -> n c h w", h=h, w=w) + x[g]

        return pieces.map_frame_groups(back, n, max(c, inner) * h * w)


class Stage(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: its layers in order
    (openaimodel.py TimestepEmbedSequential)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int,  # type: ignore[override]
                skip: Tensor | None = None) -> Tensor:
        """`skip` (an output block's) is concatenated to x by the first layer, a VideoResBlock."""
        return self.run([x] if skip is None else [x, skip], emb, context, num_frames)

    def run(self, inputs: list[Tensor], emb: Tensor, context: Tensor, num_frames: int) -> Tensor:
        """forward on inputs = [x] or [x, skip], a list emptied by the first layer (see VideoResBlock.run)."""
        first = self[0]
        if isinstance(first, VideoResBlock):
            x = first.run(inputs, emb, num_frames)
        elif len(inputs) == 1:
            x = first(inputs.pop())
        else:
            raise ValueError("a skip tensor was passed to a stage that does not start with a res-block")
        for layer in list(self)[1:]:
            if isinstance(layer, VideoResBlock):
                x = layer(x, emb, num_frames)
            elif isinstance(layer, SpatialVideoTransformer):
                x = layer(x, context, num_frames)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """SVD's VideoUNet. Holds no buffers; parameter names are the checkpoint's, prefix stripped."""

    def __init__(self, cfg: UNetConfig, ops: Ops = nn) -> None:
        super().__init__()
        self.config = cfg
        mc, ted = cfg.model_channels, cfg.time_embed_dim

        def res(cin: int, cout: int) -> VideoResBlock:
            return VideoResBlock(cin, ted, cout, cfg.num_groups, cfg.video_kernel_size, ops)

        self.time_embed = nn.Sequential(ops.Linear(mc, ted), nn.SiLU(), ops.Linear(ted, ted))
        # num_classes "sequential": y goes through Linear, SiLU, Linear (video_model.py label_emb)
        self.label_emb = nn.Sequential(
            nn.Sequential(ops.Linear(cfg.adm_in_channels, ted), nn.SiLU(), ops.Linear(ted, ted)))

        self.input_blocks = nn.ModuleList([Stage([ops.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        skip_channels = [mc]
        ch = mc
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers.append(SpatialVideoTransformer(ch, cfg, ops))
                self.input_blocks.append(Stage(layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(Stage([Downsample(ch, ops)]))
                skip_channels.append(ch)

        self.middle_block = Stage([res(ch, ch), SpatialVideoTransformer(ch, cfg, ops), res(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers.append(SpatialVideoTransformer(ch, cfg, ops))
                if level > 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch, ops))
                self.output_blocks.append(Stage(layers))

        self.out = nn.Sequential(ops.GroupNorm(cfg.num_groups, ch), nn.SiLU(),
                                 ops.Conv2d(mc, cfg.out_channels, 3, padding=1))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, y: Tensor, num_frames: int) -> Tensor:
        """x (B*T, in_channels, h, w), timesteps (B*T,) = c_noise, context (B*T, L, context_dim),
        y (B*T, adm_in_channels) -> (B*T, out_channels, h, w). h and w must be multiples of
        2**(levels - 1)."""
        n = x.shape[0]
        if num_frames < 1 or n % num_frames:
            raise ValueError(f"x has {n} rows, not a whole number of videos of num_frames={num_frames}")
        for name, t, shape in (
            ("timesteps", timesteps, (n,)),
            ("context", context, (n, -1, self.config.context_dim)),
            ("y", y, (n, self.config.adm_in_channels)),
        ):
            # same lengths once ndim matches; plain zip (no strict=) traces under every torch.compile version
            if t.ndim != len(shape) or any(e not in (-1, s) for s, e in zip(t.shape, shape)):  # noqa: B905
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape} (-1: any)")
        context = context.to(x.dtype)
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(x.dtype))
        emb = emb + self.label_emb(y.to(x.dtype))  # (B*T, time_embed_dim)

        skips: list[Tensor] = []
        # Channels-last memory: convolutions take their faster NHWC path, and the transformers' token
        # layout "(h w) c" folds back to it for free. Only convolution rounding changes.
        h = x.contiguous(memory_format=torch.channels_last)
        for stage in self.input_blocks:
            h = stage(h, emb, context, num_frames)
            skips.append(h)
        h = self.middle_block(h, emb, context, num_frames)
        for stage in self.output_blocks:
            assert isinstance(stage, Stage)
            # h and its skip are handed over in a list that the stage empties: freed as soon as used
            inputs = [h, skips.pop()]
            del h
            h = stage.run(inputs, emb, context, num_frames)
        return self._out(h, n).to(x.dtype)  # (B*T, out_channels, h, w)

    def _out(self, h: Tensor, n: int) -> Tensor:
        """The output layers (GroupNorm32, SiLU, conv), a frame group at a time."""
        c, height, width = h.shape[1], h.shape[2], h.shape[3]

        def out_group(g: slice) -> Tensor:
            return self.out[2](F.silu(pieces.group_norm32(self.out[0], h[g])))

        return pieces.map_frame_groups(out_group, n, c * height * width)

