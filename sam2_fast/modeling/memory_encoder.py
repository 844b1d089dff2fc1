"""Memory encoder: fuses a frame's features with its predicted mask into a memory."""

from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.common import Conv2d, LayerNorm2d, Linear, feed_forward
from sam2_fast.modeling.position_encoding import PositionEmbeddingSine
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class


class MaskDownSampler(nn.Module):
    """Downsamples a ``[B, 1, H, W]`` mask by ``total_stride`` with strided convs
    (channels grow by ``stride**2`` each time), then projects to ``embed_dim``."""

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation=nn.GELU,
    ) -> None:
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        if stride**num_layers != total_stride:
            raise InvalidInputError(f"total_stride {total_stride} is not a power of stride {stride}")
        self.encoder = nn.Sequential()
        in_ch = out_ch = 1
        for _ in range(num_layers):
            out_ch = in_ch * stride**2
            self.encoder.append(
                Conv2d(in_ch, out_ch, kernel_size=kernel_size, stride=stride, padding=padding)
            )
            self.encoder.append(LayerNorm2d(out_ch))
            self.encoder.append(activation())
            in_ch = out_ch
        self.encoder.append(Conv2d(out_ch, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ) -> None:
        super().__init__()
        self.dwconv = Conv2d(
            dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = (
            # torch.full, not scalar * ones: on the meta device the multiplication goes through
            # a decomposition that imports torch._dynamo (about 1 s of a cold start)
            nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
            if layer_scale_init_value > 0
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    """A stack of :class:`CXBlock` (optionally after a 1x1 input projection)."""

    def __init__(self, layer_factory, num_layers: int, dim: int | None = None, input_projection: bool = False) -> None:
        super().__init__()
        self.proj = nn.Identity()
        self.layers = nn.ModuleList(layer_factory() for _ in range(num_layers))
        if input_projection:
            if dim is None:
                raise InvalidInputError("dim is required with input_projection=True")
            self.proj = Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """``pix_feat [B, 256, h, w]`` + mask ``[B, 1, 16h, 16w]`` -> memory ``[B, out_dim, h, w]``
    and its sine position encoding."""

    def __init__(
        self,
        out_dim: int,
        mask_downsampler: MaskDownSampler,
        fuser: Fuser,
        position_encoding: PositionEmbeddingSine,
        in_dim: int = 256,
    ) -> None:
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj = Conv2d(in_dim, out_dim, kernel_size=1) if out_dim != in_dim else nn.Identity()

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> Dict[str, object]:
        if not skip_mask_sigmoid:
            masks = F.sigmoid(masks)
        pix_feat = pix_feat.to(masks.device)
        x = memory_encoder_op(self, pix_feat, masks)
        pos = self.position_encoding(x, x.dtype)
        return {"vision_features": x, "vision_pos_enc": [pos]}

    def fuse(self, pix_feat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """The official sequence on ``[B, C, H, W]`` tensors: downsample the mask, add the
        projected features, the ConvNeXt blocks, the output projection."""
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        return self.out_proj(self.fuser(x))

    def fuse_channels_last(self, pix_feat: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """:meth:`fuse` with every activation stored channels-last (``[B, H, W, C]`` in memory):
        the convolutions take oneDNN's channels-last kernels, each channel LayerNorm is one
        ``layer_norm`` over contiguous channels, the ConvNeXt MLPs run as
        :func:`~sam2_fast.modeling.common.feed_forward` (bands of tokens on a CPU) with the
        layer scale and the residual in place. The same products as :meth:`fuse` (float32:
        equal to rounding; the LayerNorm statistics are computed in another order)."""
        channels_last = torch.channels_last
        x = masks.contiguous(memory_format=channels_last)
        layers = list(self.mask_downsampler.encoder)
        for conv, norm, act in zip(layers[:-1:3], layers[1:-1:3], layers[2:-1:3]):
            y = conv(x)
            if y.is_contiguous(memory_format=channels_last):
                x = act(norm(y))  # LayerNorm2d: one layer_norm over the contiguous channels
            else:
                # the convolution of the 1-channel mask comes out channels-first (oneDNN's choice
                # for a 1-channel input): its 4-channel LayerNorm over the channel planes (a
                # row LayerNorm of 4 values is mostly per-row overhead: 1.0 against 4.5 ms for
                # one 512x512 map on the 2-core AMX Xeon), then channels-last on
                x = act(_plane_norm(y, norm)).contiguous(memory_format=channels_last)
        x = layers[-1](x)
        if pix_feat.size(0) > 1 and pix_feat.stride(0) == 0:
            pix_feat = pix_feat[:1]  # one frame's features expanded to its objects: projected once
        x = self.pix_feat_proj(_channels_last(pix_feat)) + x
        x = self.fuser.proj(x)
        for block in self.fuser.layers:
            y = block.norm(block.dwconv(x)).permute(0, 2, 3, 1)
            y = feed_forward(y, block.pwconv1, block.act, block.pwconv2)
            if block.gamma is not None:
                y = y.mul_(block.gamma) if not y.requires_grad else y * block.gamma
            x = x + y.permute(0, 3, 1, 2)
        return self.out_proj(x).contiguous()


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x [B, C, H, W]`` channels-last with the strides of a fresh channels-last tensor: one
    object's features, a ``[HW, 1, C]`` view, pass torch's channels-last test with a batch
    stride of C, which oneDNN does not take for channels-last (its convolution then writes
    channels-first, and every add after it mixes layouts)."""
    x = x.contiguous(memory_format=torch.channels_last)
    _, c, h, w = x.shape
    strides = (h * w * c, 1, w * c, c)
    return x if x.stride() == strides else x.as_strided(x.shape, strides)


def _plane_norm(x: torch.Tensor, norm: LayerNorm2d) -> torch.Tensor:
    """``norm`` of a channels-first ``[B, C, H, W]`` tensor over its channel planes, in float32
    (as ``layer_norm`` computes under autocast) and in place on the float32 copy."""
    xf = x.float()
    if torch.is_grad_enabled() or xf is x:
        return norm(xf)  # LayerNorm2d's own formula (autograd, or no copy to write over)
    d = xf.sub_(xf.mean(1, keepdim=True))
    r = torch.rsqrt(d.square().mean(1, keepdim=True).add_(norm.eps))
    return d.mul_(r).mul_(norm.weight[:, None, None]).add_(norm.bias[:, None, None])


# ---------------------------------------------------------------------------------------------
# the memory encoder's layout, an op: channels-first as the official module, or channels-last


def _encoder_shape_class(encoder: MemoryEncoder, pix_feat: torch.Tensor, masks: torch.Tensor) -> str:
    dtype = str(pix_feat.dtype).removeprefix("torch.")
    return (f"{dtype} B{size_class(pix_feat.shape[0])} features {list(pix_feat.shape[1:])} "
            f"masks {list(masks.shape[2:])}")


def _encoder_example(device: str) -> tuple:
    """sam2.1's memory encoder (the layout of every official config, as
    ``sam2_fast.modeling.builders.build_memory_encoder`` builds it) at image size 1024, one object."""
    with torch.device(device):
        fuser = Fuser(lambda: CXBlock(dim=256, kernel_size=7, padding=3), num_layers=2)
        downsampler = MaskDownSampler(kernel_size=3, stride=2, padding=1)
        encoder = MemoryEncoder(64, downsampler, fuser, PositionEmbeddingSine(num_pos_feats=64)).eval()
        return encoder, torch.zeros(1, 256, 64, 64), torch.zeros(1, 1, 1024, 1024)


def _channels_last_refusal(encoder: MemoryEncoder, pix_feat: torch.Tensor, masks: torch.Tensor) -> str | None:
    if pix_feat.device.type != "cpu":
        return f"inputs are on {pix_feat.device.type}; channels-last is a CPU layout choice here"
    if not all(isinstance(n, LayerNorm2d) for n in list(encoder.mask_downsampler.encoder)[1:-1:3]):
        return "the mask downsampler is not conv / LayerNorm2d / activation triples"
    return None


memory_encoder_op = Op("memory_encoder", example=_encoder_example, shape_class=_encoder_shape_class, kind="model")
memory_encoder_op.add_backend("channels_last", lambda enc, *args: enc.fuse_channels_last(*args), _channels_last_refusal)
memory_encoder_op.add_backend("reference", lambda enc, *args: enc.fuse(*args))  # the official sequence
