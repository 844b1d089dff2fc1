"""Hiera trunk with windowed attention and query pooling (the SAM 2 image backbone).

Reference: Ryali et al., "Hiera" (arXiv:2306.00989) and Bolya et al., "Window Attention is
Bugged" (arXiv:2311.05613) for the windowed absolute position embedding. State-dict keys
match the official ``image_encoder.trunk`` module.
"""

from __future__ import annotations

import importlib
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.common import (
    MLP,
    Conv2d,
    Linear,
    autocast_weight_dtype,
    kept_across_calls,
    kept_bias,
    residual_norm,
)
from sam2_fast.modeling.config import HieraConfig
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class
from sam2_fast.ops.window_attention import (
    band_rows_of,
    max_pool_nhwc,
    window_attention,
    window_partition,
    window_unpartition,
)

# the op's module (sam2_fast.ops exports the function under the same name): BAND_BYTES is read
# at call time, so it can be changed in one place
window_ops = importlib.import_module("sam2_fast.ops.window_attention")

__all__ = [
    "Hiera",
    "MultiScaleAttention",
    "MultiScaleBlock",
    "PatchEmbed",
    "window_partition",
    "window_unpartition",
]


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution, ``[B, 3, H, W] -> [B, H/4, W/4, C]``."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            # oneDNN's channels-last convolution: the same sums (bit-identical in float32 and
            # bfloat16 on the AMX Xeon) at 1024: 15.5 -> 3.3 ms in bfloat16, and the tokens
            # come out contiguous [B, H, W, C] (the first block no longer reads strided rows).
            # The strides must be the dense ones: a video frame [3, H, W] viewed from [H, W, 3]
            # and unsqueezed counts as channels-last for torch (batch stride 3), but oneDNN
            # then writes channels-first tokens (a tracked frame's encoder 487 -> 346 ms)
            b, c, h, w = x.shape
            if x.stride() != (c * h * w, 1, w * c, c):
                x = x.clone(memory_format=torch.channels_last)
        return self.proj(x).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention on ``[B, H, W, C]`` tokens, inside ``window_size`` windows
    (0: global), with optional query pooling; one fused op
    (:func:`~sam2_fast.ops.window_attention`) between the qkv and output projections.

    ``window_size`` defaults to 0, so on already partitioned windows ``[B * nW, ws, ws, C]``
    this is the official module. Padded tokens take part in the attention with the qkv bias
    as their qkv, as they do after the official block's zero padding.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        q_pool: Optional[nn.Module] = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.q_stride = _square_stride(q_pool)
        self.window_size = window_size
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, H, W, dim]`` -> ``[B, H / q_stride, W / q_stride, dim_out]``."""
        qkv = self.qkv(x)
        bias = kept_bias(self.qkv, qkv.dtype)
        x = window_attention(qkv, self.num_heads, self.window_size, self.q_stride, bias)
        return self.proj(x)


def _square_stride(pool: Optional[nn.Module]) -> int:
    """The stride of a square max-pool with kernel == stride (1 for no pooling)."""
    if pool is None:
        return 1
    kernel, stride = pool.kernel_size, pool.stride
    kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    stride = stride if isinstance(stride, tuple) else (stride, stride)
    valid = (
        isinstance(pool, nn.MaxPool2d)
        and kernel == stride
        and kernel[0] == kernel[1]
        and not pool.ceil_mode
        and pool.padding in (0, (0, 0))
        and pool.dilation in (1, (1, 1))
    )
    if not valid:
        raise InvalidInputError(
            f"q_pool must be nn.MaxPool2d with a square kernel equal to its stride, no padding "
            f"and ceil_mode=False (Hiera's q_stride pooling), got {pool}"
        )
    return kernel[0]


#: per image, qkv bytes from which a windowed block runs in bands on a CPU (see
#: :meth:`MultiScaleBlock.band_rows`); below it the bands measured no faster
BLOCK_BANDS_FROM_BYTES = 32 << 20


class MultiScaleBlock(nn.Module):
    """Hiera block: (windowed) attention with optional stage-change pooling, then an MLP.

    On a CPU, without autograd, a windowed block whose qkv is large runs the whole block
    (norms, projections, attention, MLP, residuals) on bands of whole window rows, each band
    one after the other, so that every intermediate of a band stays in the caches (about
    :data:`~sam2_fast.ops.window_attention.BAND_BYTES` of qkv). Windows never cross a band,
    so each band computes exactly the tokens it holds. On a 2-core Xeon: Hiera-T's first two
    blocks 164 / 175 -> 120 / 122 ms, Hiera-L's first three 628 / 507 / 476 -> 240 / 300 /
    300 ms; the later stages (qkv under 32 MiB) measured no gain and run as a whole. Whole or
    banded (and at which band size) is the op ``hiera_block``'s choice, measured on the
    machine (:mod:`sam2_fast.ops._tuning`); the rule above is its built-in default.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        q_stride: Optional[Tuple[int, int]] = None,
        window_size: int = 0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.pool = (
            nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False)
            if q_stride
            else None
        )
        self.attn = MultiScaleAttention(
            dim, dim_out, num_heads=num_heads, q_pool=self.pool, window_size=window_size
        )
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = Linear(dim, dim_out)

    def band_refusal(self, x: torch.Tensor) -> Optional[str]:
        """Why this block cannot run ``x`` in bands (global attention, a window the pooling
        does not tile, autograd, tracing, not a CPU), or None."""
        if self.window_size == 0:
            return "global attention: one window"
        if self.window_size % self.attn.q_stride:
            return f"window {self.window_size} is not a multiple of the query stride {self.attn.q_stride}"
        if x.dim() != 4 or x.device.type != "cpu":
            return "bands help CPU caches: a [B, H, W, C] input on the CPU"
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return "autograd or torch.compile: the block runs whole"
        return None

    def rows_per_band(self, x: torch.Tensor, band_bytes: int) -> int:
        """Input token rows per band of about ``band_bytes`` of qkv (whole window rows), 0
        when one band would hold all of ``x``'s rows."""
        row_bytes = x.shape[2] * 3 * self.dim_out * x.element_size()  # qkv bytes per token row
        rows = band_rows_of(row_bytes, self.window_size, band_bytes)
        return rows if rows < x.shape[1] else 0

    def band_rows(self, x: torch.Tensor) -> int:
        """Input token rows per band (whole window rows) when this block runs on ``x`` in
        bands by default (no measurement), 0 when it runs as a whole. Decided per image, so
        that an image in a batch is computed as it is alone (the same products and
        roundings)."""
        if self.band_refusal(x) is not None:
            return 0
        if x.shape[1] * x.shape[2] * 3 * self.dim_out * x.element_size() < BLOCK_BANDS_FROM_BYTES:
            return 0
        return self.rows_per_band(x, window_ops.BAND_BYTES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.band_refusal(x) is not None:
            return self._forward(x)
        return hiera_block_op(self, x)

    def forward_in_bands(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """The block on bands of ``rows`` input token rows, image by image."""
        stride = self.attn.q_stride
        out = None
        for i in range(x.shape[0]):
            for r0 in range(0, x.shape[1], rows):
                y = self._forward(x[i : i + 1, r0 : r0 + rows])
                if out is None:
                    out = y.new_empty(x.shape[0], x.shape[1] // stride, x.shape[2] // stride, y.shape[-1])
                out[i : i + 1, r0 // stride : r0 // stride + y.shape[1]] = y
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x  # [B, H, W, C]
        # the norms (with the residual add before the second) as the op residual_norm: under
        # autocast on a CPU one pass that writes the normalised tokens in the products' dtype
        x = residual_norm(self.norm1, x)[1]
        if self.dim != self.dim_out:
            # two products read the normalised tokens: under autocast cast them once (the
            # cast each product would make; Hiera-T's block 1: one 12 MB copy less)
            dtype = autocast_weight_dtype(x, self.proj.weight)
            if dtype is not None and x.dtype == torch.float32:
                x = x.to(dtype)
            shortcut = max_pool_nhwc(self.proj(x), self.attn.q_stride)  # self.pool's stride

        # windowing, query pooling and un-partitioning happen inside the fused attention op
        x, normed = residual_norm(self.norm2, shortcut, self.attn(x))
        out = self.mlp(normed)
        if torch.is_grad_enabled():
            return x + out
        return x.add_(out)  # x is the new sum: in place saves a stream-sized allocation


# ---------------------------------------------------------------------------------------------
# a windowed block on a CPU: whole, or on bands of window rows (two band sizes), measured

#: the band sizes the tuner compares, as multiples of window_attention.BAND_BYTES
BAND_SCALES = {"banded": 1, "banded_x4": 4}


def _block_shape_class(block: MultiScaleBlock, x: torch.Tensor) -> str:
    """Per image (the batch is left out: an image is computed as it would be alone)."""
    dtype = str(x.dtype).removeprefix("torch.")
    return (f"{dtype} {size_class(x.shape[1])}x{size_class(x.shape[2])}x{x.shape[3]} -> {block.dim_out}, "
            f"heads {block.attn.num_heads}, window {block.window_size}, stride {block.attn.q_stride}")


def _block_example(device: str) -> tuple:
    """Hiera-T's first block at image size 1024: 256 x 256 tokens of 96 channels, windows of 8."""
    with torch.device(device):
        block = MultiScaleBlock(96, 96, 1, window_size=8).eval()
        return block, torch.zeros(1, 256, 256, 96)


def _banded_backend(scale: int):
    def refusal(block: MultiScaleBlock, x: torch.Tensor) -> Optional[str]:
        reason = block.band_refusal(x)
        if reason is None and not block.rows_per_band(x, scale * window_ops.BAND_BYTES):
            reason = f"one band of {scale} x {window_ops.BAND_BYTES >> 20} MiB holds every row"
        return reason

    def preference(block: MultiScaleBlock, x: torch.Tensor) -> Optional[str]:
        if scale != 1:
            return "the built-in default bands at BAND_BYTES (the tuner measures this size too)"
        if not block.band_rows(x):
            return f"qkv under {BLOCK_BANDS_FROM_BYTES >> 20} MiB per image: runs whole by default"
        return None

    def run(block: MultiScaleBlock, x: torch.Tensor) -> torch.Tensor:
        return block.forward_in_bands(x, block.rows_per_band(x, scale * window_ops.BAND_BYTES))

    return run, refusal, preference


hiera_block_op = Op("hiera_block", example=_block_example, shape_class=_block_shape_class, kind="model")
for _name, _scale in BAND_SCALES.items():
    hiera_block_op.add_backend(_name, *_banded_backend(_scale))
hiera_block_op.add_backend("reference", lambda block, x: block._forward(x))  # the block whole


class Hiera(nn.Module):
    """Hierarchical ViT trunk; returns one ``[B, C_i, H_i, W_i]`` map per stage (stride 4..32)."""

    def __init__(self, config: HieraConfig) -> None:
        super().__init__()
        cfg = config
        if len(cfg.stages) != len(cfg.window_spec):
            raise InvalidInputError(
                f"stages {cfg.stages} and window_spec {cfg.window_spec} must have the same length"
            )
        self.config = cfg
        self.window_spec = cfg.window_spec
        self.stage_ends = [sum(cfg.stages[:i]) - 1 for i in range(1, len(cfg.stages) + 1)]
        if not 0 <= cfg.q_pool <= len(self.stage_ends) - 1:
            raise InvalidInputError(f"q_pool must be in [0, {len(self.stage_ends) - 1}], got {cfg.q_pool}")
        self.q_pool_blocks = [x + 1 for x in self.stage_ends[:-1]][: cfg.q_pool]
        self.global_att_blocks = tuple(cfg.global_att_blocks)

        embed_dim, num_heads = cfg.embed_dim, cfg.num_heads
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, embed_dim, *cfg.window_pos_embed_bkg_spatial_size)
        )
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, cfg.window_spec[0], cfg.window_spec[0])
        )

        self.blocks = nn.ModuleList()
        cur_stage = 1
        for i in range(sum(cfg.stages)):
            dim_out = embed_dim
            # the first block of a stage still uses the previous stage's window size
            window_size = self.window_spec[cur_stage - 1]
            if i in self.global_att_blocks:
                window_size = 0
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * cfg.dim_mul)
                num_heads = int(num_heads * cfg.head_mul)
                cur_stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim=embed_dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    q_stride=cfg.q_stride if i in self.q_pool_blocks else None,
                    window_size=window_size,
                )
            )
            embed_dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]

    def _get_pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        """Background embedding (bicubic-resized) plus the tiled window embedding, ``[1, H, W, C]``;
        without autograd kept until the size or the weights change (the bicubic resize to
        256 x 256 took 27 ms of every ``set_image``), and kept contiguous in the tokens' layout
        (the channels-first view made the add to the patch embedding a transposing pass: 5.6 ms
        of every image on the AMX Xeon)."""
        if torch.is_grad_enabled():
            return self._compute_pos_embed(hw)
        return kept_across_calls(self, "_kept_pos_embed", (tuple(hw), torch.is_autocast_enabled(self.pos_embed.device.type)),
                                 (self.pos_embed, self.pos_embed_window),
                                 lambda: self._compute_pos_embed(hw).contiguous())

    def _compute_pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        h, w = hw
        pos_embed = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        reps = [p // q for p, q in zip(pos_embed.shape, win.shape)]
        pos_embed = pos_embed + win.tile(reps)
        return pos_embed.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._get_pos_embed(x.shape[1:3])
        outputs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs


def window_attention_launches(image_size: int = 1024) -> List[Tuple[int, int, int, int, int]]:
    """``(head_dim, window_size, q_stride, H, W)`` of every distinct window-attention call that
    the SAM 2 / 2.1 presets make at ``image_size`` (``H, W``: the block's input grid, which
    only global attention (window 0) depends on; 0 for windowed blocks): the configurations
    the Triton kernel ships compiled (``sam2_fast.kernels.window_attention.SHIPPED``)."""
    from sam2_fast.modeling.config import PRESETS

    found = set()
    for preset in PRESETS.values():
        with torch.device("meta"):
            trunk = Hiera(preset.trunk)
        size = image_size // 4  # the patch embedding's stride
        for block in trunk.blocks:
            attn = block.attn
            grid = (size, size) if attn.window_size == 0 else (0, 0)
            found.add((attn.dim_out // attn.num_heads, attn.window_size, attn.q_stride, *grid))
            size //= attn.q_stride
    return sorted(found)
