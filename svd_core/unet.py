"""The spatio-temporal UNet of Stable Video Diffusion (the reference's `VideoUNet`).

Every spatial layer of an SD-style UNet is followed by a temporal twin, and the two are blended
with a learned scalar: out = a * spatial + (1 - a) * temporal, a = sigmoid(mix_factor).

Frames travel folded into the batch, `(B*T, C, H, W)`, with `num_frames = T` passed alongside;
every unfold is a named `rearrange`. Attribute names equal the official checkpoint keys under
`model.diffusion_model.` (see /work/shared/svd_xt_1_1.keys.json), so a checkpoint loads with a
strict `load_state_dict` after stripping that prefix.

Sources (Stability-AI/generative-models):
- sgm/modules/diffusionmodules/video_model.py: VideoUNet, VideoResBlock;
- sgm/modules/diffusionmodules/openaimodel.py: ResBlock, Downsample, Upsample;
- sgm/modules/diffusionmodules/util.py: GroupNorm32, AlphaBlender (timestep_embedding is svd_core.embeddings);
- sgm/modules/attention.py: SpatialTransformer, BasicTransformerBlock, CrossAttention, GEGLU;
- sgm/modules/video_attention.py: SpatialVideoTransformer, VideoTransformerBlock;
- scripts/sampling/configs/svd_xt_1_1.yaml: network_config (the sizes of `UNetConfig.svd_xt`).

The reference's `image_only_indicator` is dropped: SVD inference always passes zeros, and with
zeros its "learned_with_images" merge is exactly a = sigmoid(mix_factor) (util.py AlphaBlender).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .embeddings import timestep_embedding
from .layers import GroupNorm32, Upsample

# Each batch of SDPA calls is kept below this many rows. The reference splits its xformers calls at
# 32768 (attention.py MemoryEfficientCrossAttention, xformers issue 845); temporal attention at
# 1024x576 has B*H*W = 2*9216 rows, larger sizes go past CUDA's 65535 grid limit on some kernels.
_MAX_ATTENTION_BATCH = 32768


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the VideoUNet; defaults are SVD-XT 1.1 (svd_xt_1_1.yaml network_config)."""

    in_channels: int = 8  # yaml in_channels: 4 noisy latent + 4 conditioning-frame latent
    out_channels: int = 4  # yaml out_channels
    model_channels: int = 320  # yaml model_channels
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)  # yaml channel_mult
    num_res_blocks: int = 2  # yaml num_res_blocks
    attention_levels: tuple[int, ...] = (0, 1, 2)  # levels whose downsampling 1,2,4 is in attention_resolutions [4, 2, 1]
    num_head_channels: int = 64  # yaml num_head_channels
    transformer_depth: int = 1  # yaml transformer_depth
    context_dim: int = 1024  # yaml context_dim (OpenCLIP ViT-H image embedding)
    vector_embed_dim: int = 256  # ConcatTimestepEmbedderND outdim, for each of fps_id, motion_bucket_id, cond_aug
    video_kernel_size: int = 3  # yaml video_kernel_size [3, 1, 1]: temporal kernel k, spatial 1x1
    num_groups: int = 32  # GroupNorm groups: util.py normalization, attention.py Normalize

    @property
    def time_embed_dim(self) -> int:
        """Width of the timestep embedding (video_model.py: model_channels * 4)."""
        return 4 * self.model_channels

    @property
    def adm_in_channels(self) -> int:
        """Width of the vector conditioning y (yaml adm_in_channels 768 = 3 * 256)."""
        return 3 * self.vector_embed_dim

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
        if adm <= 0 or adm % 3:
            raise ValueError(f"label_emb.0.0 takes {adm} inputs; SVD's y is 3 embeddings of equal width")
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
            vector_embed_dim=adm // 3,
            video_kernel_size=int(kernel[2]),
        )


class AlphaBlender(nn.Module):
    """a * spatial + (1 - a) * temporal with a = sigmoid(mix_factor) (util.py AlphaBlender)."""

    def __init__(self) -> None:
        super().__init__()
        self.mix_factor = nn.Parameter(torch.full((1,), 0.5))  # merge_factor default 0.5

    def forward(self, spatial: Tensor, temporal: Tensor) -> Tensor:
        alpha = torch.sigmoid(self.mix_factor.float())
        return alpha.to(spatial.dtype) * spatial + (1.0 - alpha).to(spatial.dtype) * temporal


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, + embedding, GroupNorm-SiLU-conv, + skip (openaimodel.py ResBlock).

    With `temporal_kernel=None` it is the 2-D block on (N, C, H, W) with emb (N, E). With an int k it
    is the 3-D `time_stack` block on (B, C, T, H, W): kernel (k, 1, 1), padding (k//2, 0, 0), and a
    per-frame emb (B, T, E) (the reference's exchange_temb_dims).
    """

    def __init__(
        self, channels: int, emb_channels: int, out_channels: int, num_groups: int, temporal_kernel: int | None = None
    ) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Module:
            if temporal_kernel is None:
                return nn.Conv2d(cin, cout, 3, padding=1)
            return nn.Conv3d(cin, cout, (temporal_kernel, 1, 1), padding=(temporal_kernel // 2, 0, 0))

        self.in_layers = nn.Sequential(GroupNorm32(num_groups, channels), nn.SiLU(), conv(channels, out_channels))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # index 2 is the reference's Dropout (p=0 in SVD): kept as Identity so index 3 names the conv
        self.out_layers = nn.Sequential(
            GroupNorm32(num_groups, out_channels), nn.SiLU(), nn.Identity(), conv(out_channels, out_channels)
        )
        self.skip_connection: nn.Module = nn.Identity()
        if out_channels != channels:
            if temporal_kernel is not None:
                self.skip_connection = nn.Conv3d(channels, out_channels, 1)
            else:
                self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)
        if h.ndim == 5:
            e = rearrange(e, "b t c -> b c t 1 1")  # one embedding per frame
        else:
            e = rearrange(e, "n c -> n c 1 1")
        return self.skip_connection(x) + self.out_layers(h + e)


class VideoResBlock(ResBlock):
    """Spatial ResBlock, then a temporal ResBlock over frames, blended (video_model.py VideoResBlock)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, num_groups: int, video_kernel_size: int) -> None:
        super().__init__(channels, emb_channels, out_channels, num_groups)
        self.time_stack = ResBlock(out_channels, emb_channels, out_channels, num_groups, video_kernel_size)
        self.time_mixer = AlphaBlender()

    def forward(self, x: Tensor, emb: Tensor, num_frames: int) -> Tensor:  # type: ignore[override]
        spatial = super().forward(x, emb)  # (B*T, C, H, W)
        video = rearrange(spatial, "(b t) c h w -> b c t h w", t=num_frames)
        temporal = self.time_stack(video, rearrange(emb, "(b t) e -> b t e", t=num_frames))
        temporal = rearrange(temporal, "b c t h w -> (b t) c h w")
        return self.time_mixer(spatial, temporal)


class Downsample(nn.Module):
    """3x3 conv with stride 2 (openaimodel.py Downsample, conv_resample=True)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Attention(nn.Module):
    """Multi-head attention, q from x and k, v from context (attention.py CrossAttention, no qkv bias)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, query_dim)])  # reference: Sequential(Linear, Dropout)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        ctx = x if context is None else context
        q, k, v = (
            rearrange(p, "n s (h d) -> n h s d", h=self.heads) for p in (self.to_q(x), self.to_k(ctx), self.to_v(ctx))
        )
        # (N, heads, S, head_dim); default softmax scale head_dim**-0.5, as the reference's
        step = _MAX_ATTENTION_BATCH
        if q.shape[0] <= step:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            parts = [F.scaled_dot_product_attention(q[i : i + step], k[i : i + step], v[i : i + step]) for i in range(0, q.shape[0], step)]
            out = torch.cat(parts)
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

    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU with inner width 4*dim, then Linear (attention.py FeedForward, glu=True, mult=4)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        super().__init__()
        # index 1 is the reference's Dropout (p=0 in SVD)
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim_out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-LayerNorm self-attention, cross-attention, feed-forward (attention.py BasicTransformerBlock)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = Attention(dim, dim, heads, head_dim)
        self.ff = FeedForward(dim, dim)
        self.attn2 = Attention(dim, context_dim, heads, head_dim)
        self.norm1 = nn.LayerNorm(dim)  # LayerNorm eps 1e-5: torch default, as in the reference
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        if context.shape[1] == 1:  # one context token: see Attention.single_key (norm2(x) is not needed)
            x = x + self.attn2.single_key(context)  # (N, 1, C) broadcast over the queries
        else:
            x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class TemporalTransformerBlock(TransformerBlock):
    """The same block run along frames, with an extra residual feed-forward first
    (video_attention.py VideoTransformerBlock with ff_in=True, i.e. yaml extra_ff_mix_layer)."""

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int) -> None:
        super().__init__(dim, heads, head_dim, context_dim)
        self.norm_in = nn.LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim)

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:  # type: ignore[override]
        """x (B*T, S, C); context (B, L, D): each video's first-frame context, seen at every position."""
        s = x.shape[1]
        z = rearrange(x, "(b t) s c -> (b s) t c", t=num_frames)
        z = self.ff_in(self.norm_in(z)) + z
        z = self.attn1(self.norm1(z)) + z
        if context.shape[1] == 1:  # one token: its value, per video, broadcast over positions and frames
            v = self.attn2.single_key(context)  # (B, 1, C)
            z = rearrange(rearrange(z, "(b s) t c -> b s t c", s=s) + v[:, None], "b s t c -> (b s) t c")
        else:
            z = self.attn2(self.norm2(z), repeat(context, "b l d -> (b s) l d", s=s)) + z
        z = self.ff(self.norm3(z)) + z
        return rearrange(z, "(b s) t c -> (b t) s c", s=s)


class SpatialVideoTransformer(nn.Module):
    """Spatial transformer over positions, temporal transformer over frames, blended
    (video_attention.py SpatialVideoTransformer with use_linear, use_spatial_context)."""

    def __init__(self, channels: int, cfg: UNetConfig) -> None:
        super().__init__()
        heads, head_dim = channels // cfg.num_head_channels, cfg.num_head_channels
        inner = heads * head_dim
        self.norm = nn.GroupNorm(cfg.num_groups, channels, eps=1e-6)  # attention.py Normalize: eps 1e-6, no fp32 cast
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            [TransformerBlock(inner, heads, head_dim, cfg.context_dim) for _ in range(cfg.transformer_depth)]
        )
        self.time_stack = nn.ModuleList(
            [TemporalTransformerBlock(inner, heads, head_dim, cfg.context_dim) for _ in range(cfg.transformer_depth)]
        )
        # frame-index embedding: width channels, hidden 4 * channels (video_attention.py time_pos_embed)
        self.time_pos_embed = nn.Sequential(nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, channels))
        self.time_mixer = AlphaBlender()
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: Tensor, context: Tensor, num_frames: int) -> Tensor:
        n, c, h, w = x.shape  # (B*T, C, H, W)
        # the temporal cross-attention sees the first frame's context of each video, at every position
        first = rearrange(context, "(b t) l d -> b t l d", t=num_frames)[:, 0]  # (B, L, D)
        frames = repeat(torch.arange(num_frames, device=x.device), "t -> (b t)", b=n // num_frames)
        z = rearrange(self.norm(x), "n c h w -> n (h w) c")
        z = self.proj_in(z)  # (B*T, H*W, inner)
        frame_emb = self.time_pos_embed(timestep_embedding(frames, c).to(z.dtype))  # (B*T, C)
        frame_emb = rearrange(frame_emb, "n c -> n 1 c")
        for block, time_block in zip(self.transformer_blocks, self.time_stack):
            z = block(z, context)
            z = self.time_mixer(z, time_block(z + frame_emb, first, num_frames))
        z = self.proj_out(z)
        return rearrange(z, "n (h w) c -> n c h w", h=h, w=w) + x


class Stage(nn.ModuleList):
    """One entry of input_blocks / middle_block / output_blocks: its layers in order
    (openaimodel.py TimestepEmbedSequential)."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor, num_frames: int) -> Tensor:  # type: ignore[override]
        for layer in self:
            if isinstance(layer, VideoResBlock):
                x = layer(x, emb, num_frames)
            elif isinstance(layer, SpatialVideoTransformer):
                x = layer(x, context, num_frames)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """SVD's VideoUNet. Holds no buffers; parameter names are the checkpoint's, prefix stripped."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.config = cfg
        mc, ted = cfg.model_channels, cfg.time_embed_dim

        def res(cin: int, cout: int) -> VideoResBlock:
            return VideoResBlock(cin, ted, cout, cfg.num_groups, cfg.video_kernel_size)

        self.time_embed = nn.Sequential(nn.Linear(mc, ted), nn.SiLU(), nn.Linear(ted, ted))
        # num_classes "sequential": y goes through Linear, SiLU, Linear (video_model.py label_emb)
        self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(cfg.adm_in_channels, ted), nn.SiLU(), nn.Linear(ted, ted)))

        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(cfg.in_channels, mc, 3, padding=1)])])
        skip_channels = [mc]
        ch = mc
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers.append(SpatialVideoTransformer(ch, cfg))
                self.input_blocks.append(Stage(layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(Stage([Downsample(ch)]))
                skip_channels.append(ch)

        self.middle_block = Stage([res(ch, ch), SpatialVideoTransformer(ch, cfg), res(ch, ch)])

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if level in cfg.attention_levels:
                    layers.append(SpatialVideoTransformer(ch, cfg))
                if level > 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.output_blocks.append(Stage(layers))

        self.out = nn.Sequential(GroupNorm32(cfg.num_groups, ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, padding=1))

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
            if t.ndim != len(shape) or any(e not in (-1, s) for s, e in zip(t.shape, shape)):
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
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, context, num_frames)
        return self.out(h.to(x.dtype))  # (B*T, out_channels, h, w)
