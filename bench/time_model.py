"""The time model: seconds of every stage of SVD on a GPU, from a trace of its operators, without a GPU.

    python bench/time_model.py                               # SVD-XT 1.1, 1024x576, 25 frames, fp16, all devices
    python bench/time_model.py --device-model a100_80gb_sxm4 --peer diffusers --json out.json
    python bench/time_model.py --pieces                      # what cutting activations into pieces costs

It runs the stages of bench/memory.py (image encoder, VAE encoder, one guided UNet step, one decode chunk;
ours through svd_core's functions, with `--peer diffusers` diffusers' and transformers' modules) on fake CUDA
tensors (FakeTensorMode: shapes and strides, no data, no GPU) under a dispatch mode that records every
aten operator a GPU would run as a kernel: its FLOPs (torch.utils.flop_counter's formulas for matmuls,
convolutions and attention; 0 for everything else) and the bytes it moves (tensors read + written). View and
metadata operators (view, expand, permute, slice, ...) are no kernels: no time, no launch. Composite
operators are followed down to what they dispatch to (linear -> addmm, group_norm -> native_group_norm),
except scaled_dot_product_attention, which is one fused kernel on a GPU (FlashAttention-2 for fp16 with a
head dim <= 256, PyTorch's first choice), and the upsampling operators, one kernel each.

Each kernel's time on a device is the roofline plus a launch:

    t = max(FLOPs / (peak FLOP/s x e_kind), bytes / (peak bandwidth x e_mem)) + launch

with the peak of the unit the kernel runs on (fp16/bf16 matmul, convolution and attention: tensor cores with
fp32 accumulation; fp32 convolution: TF32 tensor cores, cudnn.allow_tf32's default; fp32 matmul: CUDA cores,
cuda.matmul.allow_tf32's default False). "pure peak" sets every e to 1 and takes the traced bytes as they
are; "calibrated" uses the attainable fractions of `ATTAINABLE` and the traffic the kernels really add
(cuDNN's NCHW <-> NHWC transposes around an fp16 convolution whose input is not channels-last, GroupNorm's
second read of its input, FlashAttention's padding of queries and keys to its tiles), each cited there.

End to end = image encoder + VAE encoder + steps x guided UNet step + decode (25 frames in chunks of
--chunk, the last one shorter). "uncut" runs ours with svd_core.nets.pieces' sizes so large that every
activation is one piece: the difference to "ours" is what the pieces cost on a GPU. `--pieces` splits that
cost by kind of piece (each kind cut alone, the others uncut) and times any `--try-pieces` sizes beside their
memory (bench/memory.py's count, weights included).

The calibration prints the model's diffusers figure beside published ones (an eager A100 run, and TensorRT on
an H100 PCIe as a lower bound). The calibrated model lands within 2x of the eager figure but below it (and
below the TensorRT bound): what it does not see (sustained clocks under load, cuDNN's heuristic algorithm
choice without cudnn.benchmark, GEMMs near the ridge point that reach neither roof) makes real runs slower.
Read its figures as ratios between implementations, piece sizes and devices rather than as absolute times.

Library use: `trace_stages` once per implementation, then `predict(device, traces)` and `end_to_end(...)`
per device (or `model_seconds` for both at once).
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
import memory as memory_model  # noqa: E402
import svd_core  # noqa: E402
from memory import STAGES, Work  # noqa: E402
from svd_core.nets.pieces import DEFAULT_PIECE_SIZES, PieceSizes, use_piece_sizes  # noqa: E402

log = logging.getLogger("time_model")
aten = torch.ops.aten
UNCUT = PieceSizes(group_elements=2**62, token_elements=2**62, slice_elements=2**62, score_elements=2**62)


# --- devices ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    """Datasheet peaks (dense, no sparsity) of one GPU."""

    name: str
    tensor_flops: float  # fp16/bf16 tensor cores, fp32 accumulation (what cuBLAS / cuDNN use for PyTorch)
    tf32_flops: float  # TF32 tensor cores
    fp32_flops: float  # CUDA cores, fp32 FMA
    bandwidth: float  # DRAM bytes/s
    source: str


T = 1e12
# NVIDIA H100 datasheet, https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet :
# "FP16 Tensor Core 1,979 / 1,513 teraFLOPS*" (SXM / PCIe, *with sparsity: dense is half), "TF32 989 / 756*",
# "FP32 67 / 51 teraFLOPS", "GPU memory bandwidth 3.35 TB/s / 2 TB/s". H100's tensor cores run fp16 with fp32
# accumulation at full rate.
# NVIDIA A100 datasheet, https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/
# nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf : "FP16 Tensor Core 312 TFLOPS | 624 TFLOPS*",
# "TF32 156 | 312*", "FP32 19.5 TFLOPS", bandwidth "80GB SXM 2,039 GB/s", "40GB 1,555 GB/s".
# GeForce cards run fp16 tensor math with fp32 accumulation at HALF the fp16-accumulate rate that the
# marketing figure quotes; PyTorch's cuBLAS/cuDNN calls accumulate in fp32, so that is the rate used here.
# RTX 4090: NVIDIA Ada GPU architecture whitepaper, https://images.nvidia.com/aem-dam/Solutions/geforce/ada/
# nvidia-ada-gpu-architecture.pdf, Appendix A table: "Peak FP16 Tensor TFLOPS with FP16 Accumulate 330.3/660.6",
# "with FP32 Accumulate 165.2/330.4", "Peak TF32 Tensor TFLOPS 82.6/165.2", "Peak FP32 TFLOPS (non-Tensor)
# 82.6", "Memory Bandwidth 1008 GB/sec".
# RTX 3060 12 GB: no whitepaper of its own. The NVIDIA Ampere GA102 whitepaper, https://www.nvidia.com/content/
# PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf, gives the GA10x SM rate through the RTX 3090
# (82 SMs, 1695 MHz boost): "Peak FP16 Tensor TFLOPS with FP16 Accumulate 142/284", "with FP32 Accumulate
# 71/142", "Peak TF32 Tensor 35.6/71", i.e. 512 dense FLOP/clock/SM with fp32 accumulation. The RTX 3060 page,
# https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3060-3060ti/ : 3584 CUDA cores (28 SMs),
# boost 1.78 GHz, 12 GB GDDR6 on a 192-bit bus at 15 Gbps = 360 GB/s. So 28 x 512 x 1.777e9 = 25.5 TFLOP/s
# (fp16 with fp32 accumulation; 51 TFLOP/s with fp16 accumulation), TF32 12.7, FP32 3584 x 2 x 1.777e9 = 12.7.
# RTX 2060 (6 GB, the Turing TU106 card): NVIDIA Turing architecture whitepaper, https://images.nvidia.com/aem-dam/
# en-zz/Solutions/design-visualization/technologies/turing-architecture/NVIDIA-Turing-Architecture-Whitepaper.pdf,
# "Turing Tensor Cores": "Eight Tensor Cores in an SM perform a total of 512 FP16 multiply and accumulate operations
# per clock, or 1024 total FP operations per clock", and its GeForce tables quote "with FP32 Accumulate" at half
# the "with FP16 Accumulate" figure: 512 FLOP/clock/SM. The RTX 2060 page, https://www.nvidia.com/en-us/geforce/
# graphics-cards/rtx-2060/ : 1920 CUDA cores (30 SMs of 64), boost 1680 MHz, 6 GB GDDR6, 192-bit, 14 Gbps = 336 GB/s.
# So 30 x 512 x 1.68e9 = 25.8 TFLOP/s; Turing has no TF32 (fp32 convolutions run on the CUDA cores): FP32
# 1920 x 2 x 1.68e9 = 6.45 for both.
# RTX 4060 (8 GB) and RTX 4060 Ti 16 GB: the Ada whitepaper above gives the Ada SM rate through the RTX 4090 (128
# SMs at 2520 MHz: 165.2 TFLOPS with FP32 accumulate = 512 FLOP/clock/SM, TF32 82.6 = 256). The RTX 4060 family
# page, https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4060-4060ti/ : RTX 4060 3072 CUDA cores
# (24 SMs of 128), boost 2.46 GHz, 8 GB GDDR6 on 128 bits; RTX 4060 Ti 4352 cores (34 SMs), boost 2.54 GHz (2535
# MHz), 16 GB GDDR6 on 128 bits. Memory 17 Gbps (4060) and 18 Gbps (4060 Ti): 272 and 288 GB/s. So 4060:
# 24 x 512 x 2.46e9 = 30.2 TFLOP/s, TF32 15.1, FP32 3072 x 2 x 2.46e9 = 15.1; 4060 Ti: 34 x 512 x 2.535e9 = 44.1,
# TF32 22.1, FP32 22.1. (Cross-check: the page's "AI TOPS", 242 and 353, are 24 and 34 SMs x 4096 sparse FP8
# ops/clock/SM = 8x the FP32-accumulate FP16 rate, at those clocks.)
_A100_SOURCE = ("NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): FP16 Tensor 312 TFLOPS "
                "dense, TF32 156, FP32 19.5")
DEVICES: dict[str, Device] = {
    "h100_sxm": Device("H100 SXM", 989.5 * T, 494.7 * T, 66.9 * T, 3.35e12,
                       "NVIDIA H100 datasheet: FP16 Tensor 1,979 TFLOPS with sparsity (989.5 dense), TF32 989*, "
                       "FP32 67, 3.35 TB/s"),
    "h100_pcie": Device("H100 PCIe", 756.5 * T, 378.0 * T, 51.2 * T, 2.0e12,
                        "NVIDIA H100 datasheet: FP16 Tensor 1,513 TFLOPS with sparsity (756.5 dense), TF32 756*, "
                        "FP32 51, 2 TB/s"),
    "a100_80gb_sxm4": Device("A100 80GB SXM4", 312 * T, 156 * T, 19.5 * T, 2.039e12, _A100_SOURCE + ", 2,039 GB/s"),
    "a100_40gb_sxm4": Device("A100 40GB SXM4", 312 * T, 156 * T, 19.5 * T, 1.555e12, _A100_SOURCE + ", 1,555 GB/s"),
    "rtx_4090": Device("RTX 4090", 165.2 * T, 82.6 * T, 82.6 * T, 1.008e12,
                       "NVIDIA Ada whitepaper, Appendix A: FP16 Tensor with FP32 accumulate 165.2 TFLOPS (330.3 "
                       "with FP16 accumulate), TF32 82.6, FP32 82.6, 1008 GB/s"),
    "rtx_3060_12gb": Device("RTX 3060 12GB", 25.5 * T, 12.7 * T, 12.7 * T, 360e9,
                            "GA102 whitepaper (GA10x SM: 512 dense fp16 FLOP/clk with FP32 accumulate, half the "
                            "FP16-accumulate rate) x 28 SMs x 1.777 GHz (RTX 3060 spec page); 192-bit x 15 Gbps "
                            "= 360 GB/s"),
    "rtx_2060": Device("RTX 2060", 25.8 * T, 6.45 * T, 6.45 * T, 336e9,
                       "Turing whitepaper (1024 FP16 FLOP/clk/SM, half with FP32 accumulate on GeForce) x 30 SMs x "
                       "1.68 GHz (RTX 2060 spec page); no TF32; 192-bit x 14 Gbps = 336 GB/s"),
    "rtx_4060": Device("RTX 4060", 30.2 * T, 15.1 * T, 15.1 * T, 272e9,
                       "Ada whitepaper SM rate (512 FP16 FLOP/clk/SM with FP32 accumulate, from the RTX 4090's 165.2 "
                       "TFLOPS) x 24 SMs x 2.46 GHz (RTX 4060 spec page); 128-bit x 17 Gbps = 272 GB/s"),
    "rtx_4060_ti_16gb": Device("RTX 4060 Ti 16GB", 44.1 * T, 22.1 * T, 22.1 * T, 288e9,
                               "Ada whitepaper SM rate (512 FP16 FLOP/clk/SM with FP32 accumulate) x 34 SMs x "
                               "2.535 GHz (RTX 4060 Ti spec page); 128-bit x 18 Gbps = 288 GB/s"),
}
ALIASES = {"a100": "a100_80gb_sxm4", "a100_40gb": "a100_40gb_sxm4", "h100": "h100_sxm", "4090": "rtx_4090",
           "3060": "rtx_3060_12gb", "2060": "rtx_2060", "4060": "rtx_4060", "4060ti": "rtx_4060_ti_16gb"}

# One kernel's fixed cost, added to its roofline time: 4 us. NVIDIA's "Getting Started with CUDA Graphs"
# (https://developer.nvidia.com/blog/cuda-graphs/) times a 2.9 us kernel at 3.8 us per kernel when launched
# back to back on a stream (about 1 us of GPU-side launch gap) and at 9.6 us when each launch waits for the
# previous; eager PyTorch adds its own dispatch on the CPU, a few us per operator, which the GPU waits on
# whenever its kernels are shorter than that. 4 us sits between the two: it matters only for small kernels.
LAUNCH_S = 4e-6


# --- what a GPU attains -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attainable:
    """Fractions of the datasheet peak that kernels of each class reach, and the kernel traffic to add."""

    gemm: float = 1.0  # cuBLAS matmuls
    conv: float = 1.0  # cuDNN convolutions (implicit GEMM)
    attention: float = 1.0  # FlashAttention-2 forward
    memory: float = 1.0  # memory-bound kernels, fraction of DRAM bandwidth
    kernel_traffic: bool = False  # NCHW transposes, GroupNorm's two passes, attention tile padding
    source: str = "datasheet peaks, traced bytes only"


PURE_PEAK = Attainable()

# Calibrated fractions, from public kernel measurements (not fitted to the published end-to-end times):
# - GEMM / convolution 0.75: cuBLAS / cuDNN implicit-GEMM fp16 kernels on large problems run at 70-80 % of the
#   dense tensor peak (the FlashAttention-2 paper, arXiv 2307.08691, sec. 1, contrasts attention's 25-40 %
#   with GEMM's "up to" 80-90 %; the UNet's convolutions and projections are mid-sized, 320-1280 channels,
#   so the lower end). Convolutions pay their layout transposes as traffic (below), not in this fraction.
# - attention: FlashAttention-2 forward reaches 50-73 % of A100 peak (arXiv 2307.08691, abstract and Fig. 5;
#   the low end at head dim 64, SVD's) -> 0.5 on Ampere / Ada, which run the same sm80 kernels; on H100
#   FlashAttention-2 reaches about 35 % (FlashAttention-3 paper, arXiv 2407.08608, abstract: "only 35 %
#   utilization on the H100"), and PyTorch's SDPA flash backend is FlashAttention-2.
# - memory-bound kernels 0.8: streaming kernels (BabelStream-type copy / triad) reach 80-90 % of datasheet
#   DRAM bandwidth on A100 / H100 / GeForce; PyTorch's elementwise and normalisation kernels sit at the
#   lower end (strided and broadcast operands, fp32 upcasts).
# - kernel traffic: cuDNN "may use padding, folding, and NCHW-to-NHWC transformations to call the Tensor Core
#   operations" (https://docs.nvidia.com/deeplearning/cudnn/developer/legacy-api.html, "Data and Filter
#   Formats"): an fp16 convolution whose input is not channels-last pays a transpose of its input and of its
#   output (two more kernels, each reading and writing the tensor once). PyTorch's GroupNorm CUDA kernel
#   computes moments in one pass and normalises in another (aten/src/ATen/native/cuda/group_norm_kernel.cu:
#   RowwiseMoments, then the fused scale-shift), reading its input twice. FlashAttention-2 runs whole tiles
#   of 128 queries x 128 keys at head dim 64 (128 x 64 at head dims 65-128; Dao-AILab/flash-attention
#   csrc/flash_attn/src/flash_fwd_launch_template.h, run_mha_fwd_hdim64 / hdim96): a temporal attention over
#   25 frames computes a 128 x 128 tile for 25 x 25 useful scores.
_FA2_A100 = "FlashAttention-2 0.5 of A100 peak at head dim 64 (arXiv 2307.08691)"
ATTAINABLE: dict[str, Attainable] = {
    "h100_sxm": Attainable(0.75, 0.75, 0.35, 0.8, True, "FlashAttention-2 at 35 % on H100 (arXiv 2407.08608)"),
    "h100_pcie": Attainable(0.75, 0.75, 0.35, 0.8, True, "FlashAttention-2 at 35 % on H100 (arXiv 2407.08608)"),
    "a100_80gb_sxm4": Attainable(0.75, 0.75, 0.5, 0.8, True, _FA2_A100),
    "a100_40gb_sxm4": Attainable(0.75, 0.75, 0.5, 0.8, True, _FA2_A100),
    "rtx_4090": Attainable(0.75, 0.75, 0.5, 0.8, True, _FA2_A100 + ", same sm80 kernels on Ada"),
    "rtx_3060_12gb": Attainable(0.75, 0.75, 0.5, 0.8, True, _FA2_A100 + ", same sm80 kernels on GA106"),
    # Turing (sm75) has no FlashAttention-2 ("support for Turing GPUs (T4, RTX 2080) is coming soon, please use
    # FlashAttention 1.x for Turing GPUs for now", https://github.com/Dao-AILab/flash-attention README): PyTorch's
    # SDPA runs its memory-efficient kernel there. Its fraction is not measured here; the Ampere one is assumed.
    "rtx_2060": Attainable(0.75, 0.75, 0.5, 0.8, True, _FA2_A100 + ", assumed for the memory-efficient kernel "
                           "on Turing (no FlashAttention-2 on sm75)"),
    "rtx_4060": Attainable(0.75, 0.75, 0.5, 0.8, True, _FA2_A100 + ", same sm80 kernels on AD107"),
    "rtx_4060_ti_16gb": Attainable(0.75, 0.75, 0.5, 0.8, True, _FA2_A100 + ", same sm80 kernels on AD106"),
}


# --- the trace ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Op:
    """One kernel: its class, the math it does and the bytes it moves."""

    name: str
    kind: str  # "gemm", "conv", "attention" (tensor cores when fp16/bf16) or "memory" (CUDA cores)
    flops: int
    bytes: int
    dtype: torch.dtype
    extra_bytes: int = 0  # traffic the kernel adds beyond its operands (calibrated model only)
    extra_launches: int = 0
    tile_fill: float = 1.0  # useful fraction of the tile work of an attention kernel


GEMMS = {aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten._scaled_mm}
CONVS = {aten.convolution, aten._convolution, aten.cudnn_convolution, aten.convolution_overrideable}
ATTENTIONS = {aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_efficient_attention,
              aten._scaled_dot_product_cudnn_attention, aten._flash_attention_forward,
              aten._efficient_attention_forward}
# composite operators that stay one kernel on a GPU (their Python decompositions would not)
FUSED = {aten.scaled_dot_product_attention, aten.upsample_nearest1d, aten.upsample_nearest2d,
         aten.upsample_nearest3d, aten.upsample_bilinear2d, aten.upsample_bicubic2d, aten.upsample_trilinear3d,
         aten._upsample_nearest_exact2d}
# no kernel: metadata, views, allocation without a fill
NO_KERNEL = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided,
             aten.lift_fresh, aten.detach_, aten._unsafe_view, aten.view, aten.reshape, aten.sym_size,
             aten.sym_stride, aten.sym_numel, aten.sym_storage_offset, aten.is_contiguous, aten.resize_}
# operators that overwrite their first argument without reading it
WRITE_ONLY_FIRST = {aten.copy_, aten.fill_, aten.zero_, aten.normal_, aten.uniform_, aten.random_,
                    aten.bernoulli_, aten.exponential_}
TENSOR_CORE_DTYPES = (torch.float16, torch.bfloat16)


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a kernel touches: a broadcast (stride 0) dimension is read once."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if size == 0:
            return 0
        if stride != 0:
            n *= size
    return n * t.element_size()


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


TensorKey = tuple[int, int, tuple[int, ...], tuple[int, ...]]


def _key(t: torch.Tensor) -> TensorKey:
    """Storage, offset, shape and strides: the same tensor passed twice is read once."""
    return (int(t.untyped_storage()._cdata), int(t.storage_offset()), tuple(int(n) for n in t.shape),
            tuple(int(n) for n in t.stride()))


def _is_channels_last(t: torch.Tensor) -> bool:
    if t.ndim == 4:
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    if t.ndim == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()
    return False


def flash_tile(head_dim: int) -> tuple[int, int]:
    """FlashAttention-2's forward tile (queries, keys) on sm80 for a head dim (flash_fwd_launch_template.h)."""
    return (128, 128) if head_dim <= 64 else (128, 64)


def _tile_fill(lq: int, lk: int, head_dim: int) -> float:
    bq, bk = flash_tile(head_dim)
    return (lq / (math.ceil(lq / bq) * bq)) * (lk / (math.ceil(lk / bk) * bk))


def make_op(func: Any, args: Sequence[Any], kwargs: dict[str, Any], out: Any) -> Op | None:
    """The kernel one aten operator is, or None for a view / metadata operator or host-only work."""
    packet = func.overloadpacket
    if packet in NO_KERNEL or func.is_view or func.namespace != "aten":
        return None
    inputs, outputs = _tensors((args, kwargs)), _tensors(out)
    if not any(t.device.type == "cuda" for t in inputs + outputs):
        return None  # host work (CPU scalars)
    skip_first = packet in WRITE_ONLY_FIRST
    seen: set[TensorKey] = set()
    read = 0
    for i, t in enumerate(inputs):
        key = _key(t)
        if key in seen or (skip_first and i == 0):
            continue
        seen.add(key)
        read += tensor_bytes(t)
    written = sum(tensor_bytes(t) for t in outputs)
    first = inputs[0] if inputs else outputs[0]
    dtype = first.dtype
    if packet in GEMMS:
        return Op(func.name(), "gemm", int(flop_registry[packet](*args, **kwargs, out_val=out)), read + written, dtype)
    if packet in CONVS:
        flops = int(flop_registry[packet](*args, **kwargs, out_val=out))
        x, y = inputs[0], outputs[0]
        extra, launches = 0, 0
        if dtype in TENSOR_CORE_DTYPES and not _is_channels_last(x):
            extra, launches = 2 * (tensor_bytes(x) + tensor_bytes(y)), 2  # NCHW -> NHWC -> NCHW
        return Op(func.name(), "conv", flops, read + written, dtype, extra, launches)
    if packet in ATTENTIONS or packet is aten.scaled_dot_product_attention:
        q, k, v = inputs[:3]
        flops = int(flop_registry[aten._scaled_dot_product_flash_attention](q, k, v, out_val=None))
        return Op("aten::_scaled_dot_product_flash_attention", "attention", flops, read + written, dtype,
                  tile_fill=_tile_fill(q.shape[-2], k.shape[-2], q.shape[-1]))
    if packet is aten.native_group_norm:
        return Op(func.name(), "memory", 0, read + written, dtype, tensor_bytes(inputs[0]), 2)
    return Op(func.name(), "memory", 0, read + written, dtype)


class OpTrace(TorchDispatchMode):
    """Records the kernel of every aten operator dispatched under it (use under FakeTensorMode)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[Op] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        packet = func.overloadpacket if func.namespace == "aten" else None
        if (packet is not None and packet not in FUSED
                and torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")):
            with self:  # follow a composite operator down to the kernels it calls (as FlopCounterMode does)
                result = func.decompose(*args, **kwargs)
            if result is not NotImplemented:
                return result
        out = func(*args, **kwargs)
        op = make_op(func, args, kwargs, out)
        if op is not None:
            self.ops.append(op)
        return out


def trace(run: Callable[[], Any], sizes: PieceSizes = DEFAULT_PIECE_SIZES) -> list[Op]:
    """The kernels run() launches, with svd_core's pieces cut at `sizes` (run under FakeTensorMode)."""
    gc.collect()
    tracer = OpTrace()
    with torch.inference_mode(), use_piece_sizes(sizes), tracer:
        result = run()
        del result
    return tracer.ops


# --- time -----------------------------------------------------------------------------------------------------

def peak_flops(op: Op, device: Device) -> float:
    if op.dtype in TENSOR_CORE_DTYPES:
        return device.tensor_flops
    if op.kind == "conv" and op.dtype == torch.float32:
        return device.tf32_flops  # torch.backends.cudnn.allow_tf32 defaults to True
    return device.fp32_flops  # torch.backends.cuda.matmul.allow_tf32 defaults to False


def op_seconds(op: Op, device: Device, attainable: Attainable = PURE_PEAK, launch_s: float = LAUNCH_S) -> float:
    """max(compute time, memory time) + launch, for one kernel."""
    flops, nbytes, launches = float(op.flops), float(op.bytes), 1
    if attainable.kernel_traffic:
        flops /= op.tile_fill
        nbytes += op.extra_bytes
        launches += op.extra_launches
    fraction = {"gemm": attainable.gemm, "conv": attainable.conv, "attention": attainable.attention}.get(op.kind, 1.0)
    compute = flops / (peak_flops(op, device) * fraction) if flops else 0.0
    memory = nbytes / (device.bandwidth * attainable.memory)
    return max(compute, memory) + launches * launch_s


@dataclass
class Summary:
    """Seconds of a list of kernels and where they go."""

    seconds: float = 0.0
    kernels: int = 0
    flops: float = 0.0
    bytes: float = 0.0
    launch_seconds: float = 0.0
    by_kind: dict[str, float] = field(default_factory=dict)


def summarise(ops: Iterable[Op], device: Device, attainable: Attainable = PURE_PEAK,
              launch_s: float = LAUNCH_S) -> Summary:
    s = Summary()
    for op in ops:
        t = op_seconds(op, device, attainable, launch_s)
        launches = 1 + (op.extra_launches if attainable.kernel_traffic else 0)
        s.seconds += t
        s.kernels += launches
        s.flops += op.flops
        s.bytes += op.bytes
        s.launch_seconds += launches * launch_s
        s.by_kind[op.kind] = s.by_kind.get(op.kind, 0.0) + t
    return s


def resolve_device(name: str) -> Device:
    key = ALIASES.get(name, name)
    if key not in DEVICES:
        raise ValueError(f"unknown device model {name!r}: expected one of {sorted(DEVICES)} or {sorted(ALIASES)}")
    return DEVICES[key]


def attainable_for(name: str, calibrated: bool) -> Attainable:
    return ATTAINABLE[ALIASES.get(name, name)] if calibrated else PURE_PEAK


# --- traces of the stages -------------------------------------------------------------------------------------

Traces = dict[str, list[Op]]  # stage ("decode_chunk/14" for a chunk of 14 frames) -> kernels

BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {"ours": memory_model.ours_stages,
                                                     "ours_uncut": memory_model.ours_stages,
                                                     "diffusers": memory_model.diffusers_stages}


def chunk_sizes(frames: int, chunk: int) -> list[int]:
    """The decode chunks of `frames` frames in chunks of `chunk` (the last one shorter)."""
    return [min(chunk, frames - i) for i in range(0, frames, chunk)]


def trace_stages(config: svd_core.SVDConfig, work: Work, impl: str = "ours", *,
                 chunks: Sequence[int] | None = None, sizes: PieceSizes | None = None,
                 stages: Sequence[str] = STAGES) -> Traces:
    """Kernels of each stage for one implementation ("ours", "ours_uncut", "diffusers") on fake CUDA;
    decode_chunk once per distinct chunk size in `chunks` (default: those of work.frames in work.chunk)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    if sizes is None:
        sizes = UNCUT if impl == "ours_uncut" else DEFAULT_PIECE_SIZES
    build = BUILDERS[impl]
    wanted = sorted(set(chunks if chunks is not None else chunk_sizes(work.frames, work.chunk)), reverse=True)
    out: Traces = {}
    other = [s for s in stages if s != "decode_chunk"]
    decode_chunks = wanted if "decode_chunk" in stages else []
    for i, chunk in enumerate(decode_chunks or [work.chunk]):
        with FakeTensorMode(allow_non_fake_inputs=True):
            parts = build(config, replace(work, chunk=chunk), "cuda")
            if i == 0:
                for stage in other:
                    out[stage] = trace(parts["runners"][stage], sizes)
                    log.debug("%s %s: %d kernels", impl, stage, len(out[stage]))
            if decode_chunks:
                out[f"decode_chunk/{chunk}"] = trace(parts["runners"]["decode_chunk"], sizes)
        del parts
        gc.collect()
    return out


def predict(device_name: str, traces: Traces, *, calibrated: bool = True, launch_s: float = LAUNCH_S
            ) -> dict[str, float]:
    """Seconds of each traced stage on a device."""
    device = resolve_device(device_name)
    attainable = attainable_for(device_name, calibrated)
    return {stage: summarise(ops, device, attainable, launch_s).seconds for stage, ops in traces.items()}


def end_to_end(stage_seconds: dict[str, float], *, steps: int, frames: int, chunk: int) -> dict[str, float]:
    """Image encoder + VAE encoder + steps x guided UNet step + the decode chunks, and their total."""
    decode = sum(stage_seconds[f"decode_chunk/{c}"] for c in chunk_sizes(frames, chunk))
    out = {"image_encoder": stage_seconds["image_encoder"], "vae_encoder": stage_seconds["vae_encoder"],
           "unet_step": stage_seconds["unet_step"], "sampling": steps * stage_seconds["unet_step"],
           "decode": decode}
    out["total"] = out["image_encoder"] + out["vae_encoder"] + out["sampling"] + out["decode"]
    return out


def model_seconds(config: svd_core.SVDConfig, work: Work, *, impl: str = "ours", steps: int = 25,
                  devices: Sequence[str] = tuple(DEVICES), calibrated: bool = True) -> dict[str, dict[str, float]]:
    """{device: end_to_end seconds} for one implementation: the stages traced once, timed on every device (what
    a README table or a GPU script beside its measurement calls)."""
    traces = trace_stages(config, work, impl)
    return {d: end_to_end(predict(d, traces, calibrated=calibrated), steps=steps, frames=work.frames,
                          chunk=work.chunk) for d in devices}


# --- calibration against published figures -------------------------------------------------------------------

@dataclass(frozen=True)
class Published:
    """A published end-to-end time of SVD-XT at 1024x576, 25 frames, fp16."""

    device: str
    impl: str
    steps: int
    chunk: int
    seconds: float
    what: str
    source: str
    lower_bound: bool = False  # a faster runtime than eager PyTorch: the model should be above it


PUBLISHED = (
    Published("a100_80gb_sxm4", "diffusers", 25, 5, 50.93,
              "diffusers StableVideoDiffusionPipeline, eager PyTorch (torch.compile: 43.38 s)",
              "https://github.com/siliconflow/onediff/pull/514 ('PyTorch' column; settings as in onediff's "
              "README, PR #686: img2vid-xt, 576x1024, batch 1, 25 steps, decoder chunk size 5, A100 80G SXM4)"),
    Published("h100_pcie", "diffusers", 25, 5, 22.6, "TensorRT, SVD-XT 1.1 (a lower bound for eager PyTorch)",
              "https://huggingface.co/stabilityai/stable-video-diffusion-img2vid-xt-1-1 (model card, performance: "
              "22.6 s on an H100 PCIe with TensorRT)", lower_bound=True),
)


def calibration(traces: Traces, frames: int = 25) -> list[dict[str, Any]]:
    """The model's diffusers figures beside each published one (pure peak and calibrated), as ratios."""
    rows = []
    for p in PUBLISHED:
        row: dict[str, Any] = {**asdict(p)}
        for mode, calibrated in (("pure_peak", False), ("calibrated", True)):
            total = end_to_end(predict(p.device, traces, calibrated=calibrated), steps=p.steps, frames=frames,
                               chunk=p.chunk)["total"]
            row[mode] = total
            row[f"{mode}_ratio"] = total / p.seconds
        rows.append(row)
    return rows


def log_calibration(rows: Sequence[dict[str, Any]]) -> None:
    log.info("")
    log.info("calibration: the model's diffusers end to end beside published figures (model / published)")
    for r in rows:
        kind = "lower bound, model should be >= 1" if r["lower_bound"] else "eager PyTorch, within 2x = plausible"
        log.info("  %s, %d steps, decode chunk %d: published %.2f s (%s)", DEVICES[r["device"]].name, r["steps"],
                 r["chunk"], r["seconds"], r["what"])
        log.info("    pure peak %.2f s (ratio %.2f), calibrated %.2f s (ratio %.2f); %s", r["pure_peak"],
                 r["pure_peak_ratio"], r["calibrated"], r["calibrated_ratio"], kind)
        log.info("    source: %s", r["source"])


# --- what the pieces cost -------------------------------------------------------------------------------------

PIECE_KINDS = {"frame groups": "group_elements", "row chunks": "token_elements", "spatial slices": "slice_elements",
               "attention batch": "score_elements"}
PIECE_STAGES = ("unet_step", "decode_chunk")


def parse_piece_sizes(text: str) -> PieceSizes:
    """"group=2**27,slice=2**26" -> PieceSizes with those fields (the others at their defaults)."""
    names = {"group": "group_elements", "token": "token_elements", "slice": "slice_elements",
             "score": "score_elements"}
    values: dict[str, int] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in names:
            raise ValueError(f"piece size {key!r} in {text!r}: expected one of {sorted(names)}")
        base, _, exp = value.partition("**")
        values[names[key]] = int(base) ** int(exp) if exp else int(base)
    return replace(DEFAULT_PIECE_SIZES, **values)


def piece_variants(extra: Sequence[PieceSizes] = ()) -> dict[str, PieceSizes]:
    """The default sizes, everything uncut, each kind of piece cut alone (the others uncut: what that kind
    costs), and any sizes to try."""
    variants = {"default": DEFAULT_PIECE_SIZES, "uncut": UNCUT}
    for kind, name in PIECE_KINDS.items():
        variants[f"only {kind} cut"] = replace(UNCUT, **{name: getattr(DEFAULT_PIECE_SIZES, name)})
    for sizes in extra:
        changed = [f"{k.split('_')[0]}=2**{math.log2(getattr(sizes, k)):g}" for k in PIECE_KINDS.values()
                   if getattr(sizes, k) != getattr(DEFAULT_PIECE_SIZES, k)]
        variants[", ".join(changed) or "default"] = sizes
    return variants


def piece_costs(config: svd_core.SVDConfig, work: Work, variants: dict[str, PieceSizes], *,
                memory: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """For each variant: the traces of a guided step and a decode chunk of ours, and (for the variants named
    in `memory`) weights + activation peak of both in bytes, as bench/memory.py counts them."""
    out: dict[str, dict[str, Any]] = {}
    for name, sizes in variants.items():
        traces = trace_stages(config, work, "ours", chunks=(work.chunk,), sizes=sizes, stages=PIECE_STAGES)
        out[name] = {"traces": {"unet_step": traces["unet_step"], "decode_chunk": traces[f"decode_chunk/{work.chunk}"]}}
        if name in memory:
            out[name]["memory"] = memory_peaks(config, work, sizes)
    return out


def memory_peaks(config: svd_core.SVDConfig, work: Work, sizes: PieceSizes) -> dict[str, int]:
    """Weights + activation peak (bytes) of a guided step and a decode chunk of ours with these pieces."""
    with use_piece_sizes(sizes):
        counted = memory_model.model(config, work, stages=PIECE_STAGES)["svd_core"]
    return {stage: r["weights"] + r["activations"] for stage, r in counted.items()}


def log_piece_costs(costs: dict[str, dict[str, Any]], devices: Sequence[str], work: Work) -> dict[str, Any]:
    """One table per stage: modelled seconds (calibrated) of each variant on each device, beside uncut."""
    report: dict[str, Any] = {}
    for stage in PIECE_STAGES:
        log.info("")
        log.info("pieces, ours %s (%s), calibrated seconds and %% over uncut; kernels, launch-bound kernels "
                 "(roofline < launch)", stage, f"{work.chunk} frames" if stage == "decode_chunk" else "guided")
        log.info("%-44s%9s%12s%s", "variant", "kernels", "launch-bnd",
                 "".join(f"{DEVICES[d].name:>22}" for d in devices))
        uncut = {d: summarise(costs["uncut"]["traces"][stage], DEVICES[d], ATTAINABLE[d]).seconds for d in devices}
        for name, c in costs.items():
            ops = c["traces"][stage]
            sums = {d: summarise(ops, DEVICES[d], ATTAINABLE[d]) for d in devices}
            first = sums[devices[0]]
            bound = sum(1 for op in ops if op_seconds(op, DEVICES[devices[0]], ATTAINABLE[devices[0]], 0.0) < LAUNCH_S)
            cells = "".join(f"{sums[d].seconds:>13.3f} {100 * (sums[d].seconds / uncut[d] - 1):>+6.1f}%"
                            for d in devices)
            mem = c.get("memory", {}).get(stage)
            log.info("%-44s%9d%12d%s%s", name, first.kernels, bound, cells,
                     f"   {mem / memory_model.GiB:.2f} GiB" if mem is not None else "")
            report.setdefault(name, {})[stage] = {
                "kernels": first.kernels, "launch_bound_kernels": bound,
                "seconds": {d: sums[d].seconds for d in devices},
                "over_uncut": {d: sums[d].seconds / uncut[d] - 1 for d in devices},
                **({"memory_bytes": mem} if mem is not None else {})}
    return report


# --- tables ---------------------------------------------------------------------------------------------------

ROWS = ("image_encoder", "vae_encoder", "unet_step", "sampling", "decode", "total")


def tables(results: dict[str, dict[str, dict[str, dict[str, float]]]], header: str) -> None:
    """results[mode][device][impl] -> end_to_end dict; one table per device and mode."""
    for mode, per_device in results.items():
        for device_name, per_impl in per_device.items():
            impls = list(per_impl)
            log.info("")
            log.info("%s, %s (%s), seconds", DEVICES[device_name].name, mode, header)
            log.info("%-14s%s", "stage", "".join(f"{i:>14}" for i in impls))
            for row in ROWS:
                log.info("%-14s%s", row, "".join(f"{per_impl[i][row]:>14.3f}" for i in impls))


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="svd_xt_1_1", choices=sorted(svd_core.PRESETS))
    ap.add_argument("--device-model", default="all", help=f"one of {sorted(DEVICES)}, an alias "
                    f"{sorted(ALIASES)}, or all")
    ap.add_argument("--peer", choices=("diffusers", "none"), default="diffusers")
    ap.add_argument("--steps", type=int, default=25, help="sampling steps (diffusers' default 25; the preset's 30)")
    ap.add_argument("--chunk", type=int, default=None, help="decode chunk (default: the preset's, 14)")
    ap.add_argument("--pieces", action="store_true",
                    help="instead: what each kind of piece costs (ours, guided step and decode chunk; minutes)")
    ap.add_argument("--try-pieces", action="append", default=[], metavar="SIZES",
                    help="with --pieces, also these sizes, e.g. group=2**27,slice=2**27 (memory counted too)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    config = svd_core.PRESETS[args.preset]
    s = config.sampling
    work = Work(width=s.width, height=s.height, frames=s.num_frames, chunk=args.chunk or s.decode_chunk_size)
    devices = sorted(DEVICES) if args.device_model == "all" else [ALIASES.get(args.device_model,
                                                                              args.device_model)]
    for d in devices:
        resolve_device(d)
    settings = {"preset": args.preset, "width": work.width, "height": work.height, "frames": work.frames,
                "steps": args.steps, "chunk": work.chunk, "launch_s": LAUNCH_S}
    output: dict[str, Any] = {"settings": settings, "devices": {d: asdict(DEVICES[d]) for d in devices},
                              "attainable": {d: asdict(ATTAINABLE[d]) for d in devices}}
    if args.pieces:
        tried = [parse_piece_sizes(t) for t in args.try_pieces]
        variants = piece_variants(tried)
        costs = piece_costs(config, work, variants, memory=[n for n, v in variants.items() if v in tried])
        output["pieces"] = log_piece_costs(costs, devices, work)
    else:
        impls = ["ours", "ours_uncut"] + (["diffusers"] if args.peer == "diffusers" else [])
        traces = {}
        for impl in impls:
            chunks = set(chunk_sizes(work.frames, work.chunk))
            if impl == "diffusers":
                chunks |= {p.chunk for p in PUBLISHED}
            traces[impl] = trace_stages(config, work, impl, chunks=sorted(chunks))
        results: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        for mode, calibrated in (("pure peak", False), ("calibrated", True)):
            results[mode] = {d: {impl: end_to_end(predict(d, traces[impl], calibrated=calibrated), steps=args.steps,
                                                  frames=work.frames, chunk=work.chunk) for impl in impls}
                             for d in devices}
        header = (f"{config.name} {work.width}x{work.height}x{work.frames}, {args.steps} steps, decode chunk "
                  f"{work.chunk}")
        tables(results, header)
        output["results"] = results
        if "diffusers" in traces and (work.width, work.height, work.frames) == (1024, 576, 25):
            output["calibration"] = calibration(traces["diffusers"], work.frames)
            log_calibration(output["calibration"])
    if args.json:
        args.json.write_text(json.dumps(output, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
