"""Memory formulas: the activation bytes each stage of SVD needs, from sizes alone.

ComfyUI's model manager is told these figures (`load_models_gpu(..., memory_required=...)`), so that it
makes room first (offloading other models, or loading a model partially) instead of running out half
way. Each formula follows the allocation order of the memory-lean code (svd_core.nets.pieces and the modules
that use it) at the granularity of the tensors that matter: the clip-sized activations alive at each
point, plus the working set of one piece (a frame group, a token chunk, a spatial slice). bench/memory.py
prints them beside a count of live bytes on fake tensors (real modules, no GPU), and the tests hold the
two within a few tens of percent, estimate above measurement, at every size they try.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .nets.image_encoder import ImageEncoderConfig
from .nets.pieces import PieceSizes, current_piece_sizes
from .nets.unet import UNetConfig
from .nets.vae import VAEConfig

__all__ = ["image_encoder_bytes", "vae_encoder_bytes", "unet_step_bytes", "decode_bytes", "image_decode_bytes"]

FLOAT32_BYTES = 4  # bytes of a float32 element: GroupNorm32 / LayerNorm32 upcasts, EDM arithmetic


def _element_bytes(dtype: torch.dtype) -> int:
    """Bytes of one element of `dtype`."""
    return torch.empty((), dtype=dtype).element_size()


def _per_piece(n: int, per_item: int, budget: int) -> int:
    """Items in one piece (pieces._pieces)."""
    return min(n, max(1, budget // max(1, per_item)))


@dataclass
class _Ledger:
    """Live bytes over a sequence of allocations and frees, with the peak and transient working sets."""

    live: int = 0
    peak: int = 0
    held: list[int] = field(default_factory=list)

    def alloc(self, n: int) -> int:
        self.live += n
        self.peak = max(self.peak, self.live)
        return n

    def free(self, n: int) -> None:
        self.live -= n

    def transient(self, n: int) -> None:
        self.peak = max(self.peak, self.live + n)


# --- UNet ------------------------------------------------------------------------------------------

def _unet_res(ledger: _Ledger, sizes: PieceSizes, n: int, cin: int, cout: int, hw: tuple[int, int], e: int,
              release: tuple[int, ...] = ()) -> int:
    """VideoResBlock: spatial output, its per-group working set, the inputs in `release` let go, then
    the temporal block's kept intermediate and per-slice working set. Returns the output's bytes."""
    p = hw[0] * hw[1]
    g = _per_piece(n, max(cin, cout) * p, sizes.group_elements)
    # per group: concatenated input, its float32 copy and norm, the cast, SiLU, conv, + emb, norm, conv, skip
    ledger.transient(g * p * (cin * (e + 2 * FLOAT32_BYTES) + cout * (4 * e + 2 * FLOAT32_BYTES)))
    out = ledger.alloc(n * cout * p * e)
    for b in release:
        ledger.free(b)
    kept = ledger.alloc(n * cout * p * e)  # keep_intermediate=True
    rows = _per_piece(hw[0], n * cout * hw[1], sizes.slice_elements)  # one slice: rows of every frame
    ledger.transient(n * cout * rows * hw[1] * (2 * FLOAT32_BYTES + 3 * e))
    ledger.free(kept)
    return out


def _unet_transformer(ledger: _Ledger, sizes: PieceSizes, n: int, c: int, hw: tuple[int, int], frames: int,
                      e: int) -> int:
    """SpatialVideoTransformer: tokens z, chunked attention / feed-forward working sets, the output."""
    p = hw[0] * hw[1]
    z = ledger.alloc(n * c * p * e)
    g = _per_piece(n, 4 * p * c, sizes.group_elements)
    ledger.transient(g * p * c * 6 * e)  # LayerNorm, q, k, v, attention output, projection of one group
    rows = _per_piece(n * p, 8 * c, sizes.token_elements)
    ledger.transient(rows * c * 15 * e)  # LayerNorm, the 8C GEGLU projection, gelu, product, output
    positions = _per_piece(p, 8 * c * frames, sizes.token_elements)
    ledger.transient(positions * frames * c * 17 * e)  # a chunk of the temporal block: copy + the same
    out = ledger.alloc(n * c * p * e)
    ledger.free(z)
    return out


def unet_step_bytes(cfg: UNetConfig, videos: int, frames: int, height: int, width: int, dtype: torch.dtype,
                    *, downscale: int = 8, piece_sizes: PieceSizes | None = None) -> int:
    """Activation peak of one guided denoiser call (cond + uncond: 2 x videos x frames rows) and its
    Euler update, at `height` x `width` pixels with UNet weights in `dtype`, cut into `piece_sizes` (default:
    those in force, `current_piece_sizes()`)."""
    sizes = piece_sizes or current_piece_sizes()
    e = _element_bytes(dtype)
    n = 2 * videos * frames
    h, w = height // downscale, width // downscale
    ledger = _Ledger()
    # EDM wrapper and guidance: x (float32), its doubled copy, the network input in dtype with the
    # conditioning latent concatenated, the output and D in float32, the guided result
    io = n * h * w * cfg.out_channels
    ledger.alloc(io * (3 * FLOAT32_BYTES) + n * h * w * cfg.in_channels * e)
    channels = [cfg.model_channels * m for m in cfg.channel_mult]
    levels = len(channels)
    hw = (h, w)
    skips: list[tuple[int, int]] = [(cfg.model_channels, ledger.alloc(n * cfg.model_channels * h * w * e))]  # conv_in
    ch = cfg.model_channels
    for level, c in enumerate(channels):
        for _ in range(cfg.num_res_blocks):
            out = _unet_res(ledger, sizes, n, ch, c, hw, e)
            ch = c
            if level in cfg.attention_levels:
                t = _unet_transformer(ledger, sizes, n, c, hw, frames, e)
                ledger.free(out)
                out = t
            skips.append((c, out))
        if level != levels - 1:
            hw = ((hw[0] + 1) // 2, (hw[1] + 1) // 2)
            skips.append((ch, ledger.alloc(n * ch * hw[0] * hw[1] * e)))
    # middle: res (its input is a skip, kept), transformer, res
    a = _unet_res(ledger, sizes, n, ch, ch, hw, e)
    t = _unet_transformer(ledger, sizes, n, ch, hw, frames, e)
    ledger.free(a)
    h_bytes = _unet_res(ledger, sizes, n, ch, ch, hw, e, release=(t,))
    for level in reversed(range(levels)):
        c = channels[level]
        for i in range(cfg.num_res_blocks + 1):
            skip_c, skip_b = skips.pop()
            # h and its skip are let go once the spatial part has used them
            out = _unet_res(ledger, sizes, n, ch + skip_c, c, hw, e, release=(h_bytes, skip_b))
            ch = c
            if level in cfg.attention_levels:
                t = _unet_transformer(ledger, sizes, n, c, hw, frames, e)
                ledger.free(out)
                out = t
            if level > 0 and i == cfg.num_res_blocks:
                p = hw[0] * hw[1]
                g = _per_piece(n, 4 * c * p, sizes.group_elements)
                ledger.transient(g * c * 4 * p * 2 * e)  # nearest copy and conv of one group
                up = ledger.alloc(n * c * 4 * p * e)
                ledger.free(out)
                out = up
                hw = (2 * hw[0], 2 * hw[1])
            h_bytes = out
    p = hw[0] * hw[1]
    g = _per_piece(n, ch * p, sizes.group_elements)
    ledger.transient(g * ch * p * (2 * FLOAT32_BYTES + 2 * e))  # output GroupNorm32 of one group
    return ledger.peak


# --- temporal decoder ---------------------------------------------------------------------------------

def _decoder_slice(sizes: PieceSizes, n: int, c: int, hw: tuple[int, int], e: int) -> int:
    """Working set of one spatial slice of a temporal block: gathered rows, float32 normalisation,
    cast, SiLU, (k,1,1) convolution and the blend."""
    rows = _per_piece(hw[0], n * c * hw[1], sizes.slice_elements)
    return n * c * rows * hw[1] * (2 * FLOAT32_BYTES + 4 * e)


def decode_bytes(cfg: VAEConfig, frames: int, height: int, width: int, dtype: torch.dtype,
                 *, piece_sizes: PieceSizes | None = None) -> int:
    """Activation peak of decoding one chunk of `frames` latents to `height` x `width` frames with the
    temporal decoder in `dtype` (decode_latents, including its float32 frames), cut into `piece_sizes`
    (default: those in force, `current_piece_sizes()`). A frame-wise decoder (`cfg.temporal` False: the
    image-decoder SVDs and SV3D) is `image_decode_bytes`'s."""
    if not cfg.temporal:
        return image_decode_bytes(cfg, height, width, dtype, frames=frames, piece_sizes=piece_sizes)
    sizes = piece_sizes or current_piece_sizes()
    e = _element_bytes(dtype)
    widths = [cfg.ch * m for m in cfg.ch_mult]
    levels = len(widths)
    f = cfg.downscale
    h, w = height // f, width // f
    ledger = _Ledger()
    ledger.alloc(frames * cfg.latent_channels * h * w * (FLOAT32_BYTES + e))  # the chunk, scaled, in dtype
    ch = widths[-1]
    res_h, res_w = h, w
    clip = ledger.alloc(frames * ch * h * w * e)
    group = frames  # frames per group of the clip as it stands
    upsampled = False
    for level in reversed(range(levels)):
        c = widths[level]
        for _ in range(cfg.num_res_blocks + 1):
            p = res_h * res_w
            if upsampled:  # the previous level's upsampling fused into this block: per group, the 4x
                # nearest copy and its conv at the old width, the block's norm and SiLU, its output
                g = _per_piece(frames, 4 * max(ch, c) * p // 4, sizes.group_elements)
                work = g * p * (3 * ch + 2 * c) * e
                upsampled = False
            else:
                g = _per_piece(frames, max(ch, c) * p, sizes.group_elements)
                work = g * p * (2 * ch + 2 * c) * e
            # FrameGroups.map_ frees each old group once its frames are done: at worst the whole new
            # clip, one old group and the working set of one new group are alive together
            old_group = clip * group // frames
            new = frames * c * p * e
            ledger.free(clip)
            ledger.transient(new + old_group + work)
            clip = ledger.alloc(new)
            group, ch = g, c
            ledger.transient(_decoder_slice(sizes, frames, c, (res_h, res_w), e))
        if level != 0:
            res_h, res_w = 2 * res_h, 2 * res_w
            upsampled = True
    p = res_h * res_w
    ledger.alloc(frames * cfg.out_channels * p * e)  # the decoded frames
    ledger.free(clip)
    ledger.alloc(frames * cfg.out_channels * p * (e + 2 * FLOAT32_BYTES))  # time_mix_conv, float32 frames, clamped
    return ledger.peak


# --- frame-wise 2-D decoder ---------------------------------------------------------------------------

def _image_res(ledger: _Ledger, x: int, cin: int, cout: int, p: int, e: int, *, release: bool = True) -> int:
    """ResnetBlock on one frame whose input (`x` bytes, cin channels, p pixels) is live: the most alive at
    once is three input-sized tensors (x, norm1, SiLU), x and three outputs (h, SiLU, conv2) or x and
    h, the skip and the sum; the input is let go once the caller rebinds (unless the caller keeps it:
    `release` False). Returns the output's bytes."""
    ledger.transient(max(3 * cin, 2 * cin + cout, cin + 3 * cout) * p * e - x)
    out = ledger.alloc(cout * p * e)
    if release:
        ledger.free(x)
    return out


def image_decode_bytes(cfg: VAEConfig, height: int, width: int, dtype: torch.dtype, *, frames: int = 1,
                       piece_sizes: PieceSizes | None = None) -> int:
    """Activation peak of decoding one chunk of `frames` latents to `height` x `width` frames with the
    frame-wise 2-D decoder (nets/image_decoder.py) in `dtype`, through decode_latents: the chunk, scaled
    and cast (and its post_quant_conv), then one frame's working set beside the frames of the chunk already
    decoded, their concatenation and the float32 frames, clamped. The decoder runs one frame at a time, so
    `frames` only counts the latents and outputs; `piece_sizes` (default: those in force) bound the middle
    attention's query chunks."""
    sizes = piece_sizes or current_piece_sizes()
    e = _element_bytes(dtype)
    widths = [cfg.ch * m for m in cfg.ch_mult]
    f = cfg.downscale
    h, w = height // f, width // f
    ledger = _Ledger()
    latents = frames * cfg.latent_channels * h * w
    ledger.alloc(latents * (FLOAT32_BYTES + e))  # the chunk (float32), scaled, in dtype
    if cfg.post_quant_conv:
        ledger.alloc(latents * e)  # AutoencoderKL.decode: post_quant_conv(z), held while the decoder runs
    out_frame = cfg.out_channels * height * width * e
    done = ledger.alloc((frames - 1) * out_frame)  # the chunk's frames decoded before the last one
    # the last frame: its latent in channels-last order, conv_in (held through the middle, the caller's h)
    p = h * w
    ch = widths[-1]
    z = ledger.alloc(cfg.latent_channels * p * e)
    h0 = ledger.alloc(ch * p * e)
    ledger.free(z)
    b1 = _image_res(ledger, h0, ch, ch, p, e, release=False)  # block_1: h0 stays the caller's
    # attn_1: x, its norm, q, k, v, then the attention output, proj_out and the sum; a query chunk beside
    # the output when the scores are cut; the scores themselves if a backend keeps them
    q_step = max(1, sizes.score_elements // max(1, p))
    chunk = ch * min(p, q_step) * e if q_step < p else 0
    scores = min(p, q_step) * p * e
    ledger.transient(5 * ch * p * e - b1 + max(chunk, scores))
    ledger.transient(6 * ch * p * e - b1)
    a1 = ledger.alloc(ch * p * e)
    ledger.free(b1)
    cur = _image_res(ledger, a1, ch, ch, p, e)  # block_2; then the caller rebinds h and h0 goes
    ledger.free(h0)
    for level in reversed(range(len(widths))):
        c = widths[level]
        for _ in range(cfg.num_res_blocks + 1):
            cur = _image_res(ledger, cur, ch, c, p, e)
            ch = c
        if level != 0:  # Upsample: the nearest 4x copy and its conv (one frame is one frame group)
            ledger.transient(2 * 4 * ch * p * e)
            up = ledger.alloc(4 * ch * p * e)
            ledger.free(cur)
            cur, p = up, 4 * p
    ledger.transient(2 * ch * p * e + out_frame)  # norm_out, SiLU, conv_out
    ledger.alloc(out_frame)
    ledger.free(cur)
    ledger.alloc(frames * out_frame)  # torch.cat of the chunk's frames
    ledger.free(done + out_frame)
    # decode_latents: the float32 frames, clamped (two float32 copies at a time on the way), then the
    # torch.cat of the video's chunks and the torch.stack of the videos, with the decoder's output still held
    ledger.alloc(frames * cfg.out_channels * height * width * 3 * FLOAT32_BYTES)
    return ledger.peak


# --- the two encoders ---------------------------------------------------------------------------------

def vae_encoder_bytes(cfg: VAEConfig, images: int, height: int, width: int, dtype: torch.dtype) -> int:
    """Activation peak of VAE-encoding `images` conditioning frames: at full resolution, the input, a
    res-block's input and output and its two normalised copies; the middle attention's scores if a
    backend keeps them (bounded by PieceSizes.score_elements)."""
    e = _element_bytes(dtype)
    p = height * width
    full = images * cfg.ch * p * e
    mid = images * (p // cfg.downscale**2) * cfg.ch * cfg.ch_mult[-1] * e
    return images * cfg.in_channels * p * e + 4 * full + 6 * mid


def image_encoder_bytes(cfg: ImageEncoderConfig, images: int, height: int, width: int, dtype: torch.dtype) -> int:
    """Activation peak of CLIP-encoding `images` frames: the float32 frame and its antialiased resize,
    then one transformer block on 1 + grid^2 tokens (LayerNorm32 copies, q/k/v, the MLP)."""
    e = _element_bytes(dtype)
    frame = images * 3 * height * width * FLOAT32_BYTES * 3
    tokens = images * (cfg.grid**2 + 1)
    block = tokens * (cfg.width * (2 * FLOAT32_BYTES + 8 * e) + cfg.mlp_width * 2 * e)
    return frame + block
