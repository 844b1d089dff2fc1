"""Small building blocks shared by the SAM 2 modules."""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Type

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.ops._common import extension_refusal
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them.

    State-dict layout matches the official ``sam2.modeling.sam2_utils.MLP`` (``layers.{i}``).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: Type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.layers) == 2 and not self.sigmoid_output:
            return feed_forward(x, self.layers[0], self.act, self.layers[1])
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


#: bytes of float32 hidden activation per band of tokens in :func:`feed_forward` on a CPU
FF_BAND_BYTES = 8 << 20
#: the band sizes the tuner compares, as multiples of :data:`FF_BAND_BYTES`
FF_BAND_SCALES = {"banded": 1, "banded_x4": 4}
#: bytes of bfloat16 hidden activation per band of the ``onednn_lut`` backend
LUT_BAND_BYTES = 16 << 20


def feed_forward(
    x: torch.Tensor, first: nn.Module, act, second: nn.Module, batch_first: bool = True
) -> torch.Tensor:
    """``second(act(first(x)))`` over the last dim of ``x``. On a CPU, without autograd, a
    large hidden activation may be computed in bands of tokens whose hidden part stays in the
    caches through the first product, the activation and the second product, instead of going
    to memory and back three times (the 4-8x wider hidden layer of a Hiera block or a
    memory-attention layer is the largest tensor of the model). Whole or banded, and the band
    size, is the op ``feed_forward``'s measured choice; by default a hidden activation larger
    than two bands of :data:`FF_BAND_BYTES` runs in bands (on a 2-core Xeon: Hiera-L's stage-3
    MLP 91 -> 74 ms, Hiera-T's first 100 -> 44 ms, a memory-attention layer's 47 -> 33 ms); the
    same products, row by row.

    ``batch_first``: ``x`` is ``[B, ..., C]`` with one image per ``B``; bands never cross
    images and the choice is per image, so an image in a batch gets the products (and the
    roundings) it gets alone. False (sequence-first inputs): bands of the flattened rows.
    """
    if x.device.type != "cpu" or torch.is_grad_enabled() or torch.compiler.is_compiling():
        return second(act(first(x)))
    return feed_forward_op(x, first, in_place(act), second, batch_first)


def in_place(act):
    """The in-place form of an activation (``F.relu`` / ``nn.ReLU`` -> ``relu_``, exact
    ``F.gelu`` / ``nn.GELU`` -> ``gelu_``; the same kernel, the same numbers), or ``act``
    itself. Without autograd the hidden activation of a feed-forward is written once: a
    second tensor of its size (16-64 MB) costs a fresh allocation whose pages fault in on
    first touch (ReLU of a memory-attention layer, 4096 x 2048 bfloat16: 6.3 -> 0.9 ms on the
    AMX Xeon)."""
    if act is F.relu or isinstance(act, nn.ReLU):
        return torch.relu_
    if (act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none")):
        return _gelu_
    return act


def _gelu_(x: torch.Tensor) -> torch.Tensor:
    return torch._C._nn.gelu_(x)


def _rows_per_image(x: torch.Tensor, batch_first: bool) -> tuple[int, int]:
    images = x.shape[0] if batch_first and x.dim() >= 3 else 1
    return images, x.numel() // max(1, x.shape[-1] * images)


def _ff_in_bands(x: torch.Tensor, first: nn.Module, act, second: nn.Module, batch_first: bool,
                 band_bytes: int) -> torch.Tensor:
    band = max(64, band_bytes // (first.out_features * 4) // 64 * 64)
    return _in_row_bands(x, batch_first, band, lambda rows: second(act(first(rows))))


def _in_row_bands(x: torch.Tensor, batch_first: bool, band: int, fn) -> torch.Tensor:
    """``fn`` (a function of rows) on bands of at most ``band`` rows of ``x``, image by image."""
    images, rows = _rows_per_image(x, batch_first)
    if images == 1 and rows <= band:
        return fn(x)
    flat = x.reshape(images, rows, x.shape[-1])
    out = None
    for i in range(images):
        for r0 in range(0, rows, band):
            y = fn(flat[i, r0 : r0 + band])
            if out is None:
                out = y.new_empty(images, rows, y.shape[-1])
            out[i, r0 : r0 + band] = y
    return out.view(*x.shape[:-1], out.shape[-1])


def _ff_shape_class(x, first, act, second, batch_first=True) -> str:
    """Per image (the batch is left out: an image is computed as it would be alone)."""
    _, rows = _rows_per_image(x, batch_first)
    dtype = str(x.dtype).removeprefix("torch.")
    return f"{dtype} rows {size_class(rows)}, {first.in_features} -> {first.out_features} -> {second.out_features}"


def _ff_example(device: str) -> tuple:
    """The MLP of Hiera-T's first block at image size 1024: 256 x 256 tokens, 96 -> 384 -> 96."""
    with torch.device(device):
        return torch.zeros(1, 256, 256, 96), Linear(96, 384), F.gelu, Linear(384, 96), True


def _ff_banded_backend(scale: int):
    def refusal(x, first, act, second, batch_first=True):
        _, rows = _rows_per_image(x, batch_first)
        band = max(64, scale * FF_BAND_BYTES // (first.out_features * 4) // 64 * 64)
        return None if rows > band else f"{rows} rows per image fit one band of {band}"

    def preference(x, first, act, second, batch_first=True):
        if scale != 1:
            return "the built-in default bands at FF_BAND_BYTES (the tuner measures this size too)"
        _, rows = _rows_per_image(x, batch_first)
        if rows * first.out_features * 4 <= 2 * FF_BAND_BYTES:
            return f"a hidden activation of two bands of {FF_BAND_BYTES >> 20} MiB or less runs whole by default"
        return None

    def run(x, first, act, second, batch_first=True):
        return _ff_in_bands(x, first, act, second, batch_first, scale * FF_BAND_BYTES)

    return run, refusal, preference


#: oneDNN's fused matrix product + post-op (what inductor's CPU freezing path emits)
_ONEDNN_LINEAR = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
#: the oneDNN post-op of an activation (in_place's forms): (attr, scalars, algorithm)
_ONEDNN_POST_OPS = {torch.relu_: ("relu", [], ""), _gelu_: ("gelu", [], "none")}


def _ff_compute_dtype(x: torch.Tensor, first: nn.Module):
    """The dtype the products of a feed-forward run in: autocast's 16-bit dtype, or ``x``'s."""
    return autocast_weight_dtype(x, first.weight) or x.dtype


def _onednn_refusal(x: torch.Tensor) -> str | None:
    """Why oneDNN's fused linear cannot take ``x`` (no such kernel in this torch, not a CPU)."""
    if _ONEDNN_LINEAR is None or not torch.backends.mkldnn.is_available():
        return "this torch has no oneDNN (mkldnn) fused linear kernel"
    if x.device.type != "cpu":
        return "oneDNN runs on the CPU"
    return None


def _ff_onednn_refusal(x, first, act, second, batch_first=True):
    reason = _onednn_refusal(x)
    if reason is not None:
        return reason
    if in_place(act) not in _ONEDNN_POST_OPS:
        return f"activation {act} has no oneDNN post-op here (ReLU and exact GELU do)"
    if _ff_compute_dtype(x, first) != torch.bfloat16:
        return "the fused post-op path is for the bfloat16 fast mode (float32 keeps torch's products)"
    if first.weight.dtype != torch.float32 and first.weight.dtype != torch.bfloat16:
        return f"weights in {first.weight.dtype}"
    return None


def _ff_lut_refusal(x, first, act, second, batch_first=True):
    reason = _ff_onednn_refusal(x, first, act, second, batch_first)
    if reason is not None:
        return reason
    if in_place(act) is not _gelu_:
        return "the table is for exact GELU (ReLU is a free oneDNN post-op)"
    return _lookup_refusal()


@functools.lru_cache(maxsize=None)
def _lookup_refusal() -> str | None:
    """Why this process cannot look bfloat16 values up fast (``x`` is on the CPU already)."""
    reason = extension_refusal("cpu")
    if reason is not None:
        return reason
    if not hasattr(torch.ops.sam2_fast, "lookup_bf16_"):
        return "the compiled extension predates lookup_bf16_ (reinstall sam2-fast)"
    if not torch.ops.sam2_fast.lookup_bf16_vectorized():
        return "no AVX-512 gather on this CPU: the table would be a scalar loop"
    return None


@functools.lru_cache(maxsize=None)
def _gelu_table() -> torch.Tensor:
    """torch's exact GELU of every bfloat16 bit pattern, rounded to bfloat16 (+ one padding
    entry for the 32-bit gather): looking a value up is torch's ``gelu`` on that value."""
    bits = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)
    with torch.inference_mode():
        return torch.cat([F.gelu(bits), bits.new_zeros(1)])


def _ff_onednn_lut(x, first, act, second, batch_first=True):
    """Both products in oneDNN (bias inside), the exact GELU between them by a 128 KiB table
    of torch's GELU of every bfloat16 (csrc/lookup.cpp, an AVX-512 gather): the numbers of
    torch's path (the product rounded to bfloat16, then GELU), faster than oneDNN's erf
    post-op (Hiera-T's stage-3 fc1, 4096 x 384 -> 1536 on the AMX Xeon: 2.51 -> 2.04 ms)."""
    (w1, b1), (w2, b2) = _ff_weights(first, second)
    table = _gelu_table()

    def rows(x: torch.Tensor) -> torch.Tensor:
        hidden = _ONEDNN_LINEAR(x.to(torch.bfloat16), w1, b1, "none", [], "")
        torch.ops.sam2_fast.lookup_bf16_(hidden, table)
        return _ONEDNN_LINEAR(hidden, w2, b2, "none", [], "")

    # the table reads the hidden activation once more: in bands it is still in the caches
    # (Hiera-T's first MLP whole, 65 536 x 96 -> 384: 24 ms, in bands of 16 MiB: 11 ms)
    band = max(64, LUT_BAND_BYTES // (2 * first.out_features) // 64 * 64)
    return _in_row_bands(x, batch_first, band, rows)


def _ff_weights(first: nn.Module, second: nn.Module):
    dtype = torch.bfloat16
    return tuple(_kept_casts(layer, dtype) if layer.weight.dtype != dtype else (layer.weight, layer.bias)
                 for layer in (first, second))


def _ff_onednn(x, first, act, second, batch_first=True):
    """Both products in oneDNN's fused kernel, the activation as the first one's post-op: the
    hidden activation is written once, already activated, and the bias is added inside the
    product instead of copied into the output first (Hiera-T's MLPs on the AMX Xeon, bfloat16:
    96 -> 58, 48 -> 17, 23 -> 15, 25 -> 13 ms per stage, measured under load). The activation
    is computed from the float32 accumulator, then rounded once to bfloat16 (torch's path
    rounds the product, then the activation)."""
    (w1, b1), (w2, b2) = _ff_weights(first, second)
    attr, scalars, algorithm = _ONEDNN_POST_OPS[in_place(act)]
    hidden = _ONEDNN_LINEAR(x.to(torch.bfloat16), w1, b1, attr, scalars, algorithm)
    return _ONEDNN_LINEAR(hidden, w2, b2, "none", [], "")


feed_forward_op = Op("feed_forward", example=_ff_example, shape_class=_ff_shape_class, kind="model")
feed_forward_op.add_backend("onednn_lut", _ff_onednn_lut, _ff_lut_refusal)
feed_forward_op.add_backend("onednn", _ff_onednn, _ff_onednn_refusal)
for _name, _scale in FF_BAND_SCALES.items():
    feed_forward_op.add_backend(_name, *_ff_banded_backend(_scale))
feed_forward_op.add_backend("reference", lambda x, first, act, second, batch_first=True: second(act(first(x))))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``[B, C, H, W]`` tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x) and not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            # channels-last: the channels of a pixel are a contiguous row, one layer_norm pass
            # (float32 statistics, also under autocast) instead of the formula's eight passes
            # over strided channels (the decoder's upscaler, 8 x 64 x 128 x 128 on the AMX
            # Xeon: about 18 -> 3 ms). Traced graphs (ONNX, AOTInductor) keep the formula.
            return _channels_last_layer_norm(x, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) * torch.rsqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def is_channels_last(x: torch.Tensor) -> bool:
    """``x`` is a 4-d tensor stored channels-last and not also plain contiguous (a layout choice
    worth following: with one channel or one pixel both tests pass)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _channels_last_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the channels of a channels-last ``[B, C, H, W]`` tensor; channels-last out.
    Under autocast in the input's dtype (a bfloat16 input stays bfloat16 for the activation and
    the product after it, as CPU autocast's ``layer_norm`` gives it), else in the dtype the
    formula gives (float32 weights promote a 16-bit input)."""
    rows = x.permute(0, 2, 3, 1)
    y = F.layer_norm(rows, (rows.shape[-1],), weight, bias, eps)
    if not torch.is_autocast_enabled(x.device.type):
        dtype = torch.promote_types(x.dtype, weight.dtype)
        y = y if y.dtype == dtype else y.to(dtype)
    return y.permute(0, 3, 1, 2)


def activation_fn(name: str):
    """The functional activation named in the official configs."""
    table = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    try:
        return table[name]
    except KeyError:
        raise InvalidInputError(f"activation must be one of {sorted(table)}, got {name!r}") from None


# ---------------------------------------------------------------------------------------------
# building on the meta device

_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
)
_init_lock = threading.Lock()


def _skip_on_meta(fn):
    @functools.wraps(fn)
    def init(tensor, *args, **kwargs):
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor  # a meta tensor holds no values: nothing to initialise
        return fn(tensor, *args, **kwargs)

    init.__sam2_fast_skips_meta__ = True
    return init


@contextlib.contextmanager
def meta_device():
    """``with torch.device("meta")`` for building modules whose weights are loaded next.

    Module constructors run their random initialisation (``torch.nn.init``) even on the meta
    device, where it computes nothing but goes through torch's Python decompositions, which
    import ``torch._dynamo``: about 1 s of a cold start. Inside this context those functions
    return meta tensors untouched. The wrappers stay installed (they only skip meta tensors,
    which have no values to initialise, and call torch's function for every other tensor).
    """
    with _init_lock:
        for name in _INIT_FUNCTIONS:
            fn = getattr(torch.nn.init, name, None)
            if fn is not None and not getattr(fn, "__sam2_fast_skips_meta__", False):
                setattr(torch.nn.init, name, _skip_on_meta(fn))
    with torch.device("meta"):
        yield


def host_tensor_to(values, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` without waiting for the GPU: a copy
    from pageable host memory blocks the CPU until the queued kernels have run, so on CUDA the
    values go through pinned memory, asynchronously."""
    if torch.device(device).type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    return torch.tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# 16-bit weight copies kept across calls under autocast
#
# torch.autocast keeps the 16-bit copies of float32 weights it makes only while grad mode is
# on: under torch.inference_mode (how SAM 2 is run, the official README included) it casts
# every weight again at every call, one cast kernel per weight per layer call (about 290 of
# them per tracked video frame with tiny). The layers below keep that copy until the weight
# changes (in-place update, load_state_dict, .to(device)). The results are bit-identical: the
# copy is the same round-to-nearest cast autocast would make, and autocast then leaves the
# already-16-bit weight alone.

_HAS_AUTOCAST_QUERY = hasattr(torch, "get_autocast_dtype")


def autocast_weight_dtype(x: torch.Tensor, weight: torch.Tensor):
    """The dtype autocast would cast ``weight`` to for this call when a kept copy may stand
    in for it (autocast on, no autograd, float32 weights, not tracing), else None."""
    if torch.is_grad_enabled() or weight.dtype != torch.float32 or not _HAS_AUTOCAST_QUERY:
        return None
    device_type = x.device.type
    try:
        enabled = torch.is_autocast_enabled(device_type)
    except RuntimeError:  # a device type autocast does not know (meta: shape tracing)
        return None
    if not enabled or torch.compiler.is_compiling():
        return None
    dtype = torch.get_autocast_dtype(device_type)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def kept_across_calls(module: nn.Module, name: str, key, tensors, make):
    """``make()``, kept on ``module`` under ``name`` until ``key`` or one of ``tensors``
    changes (updated in place, reloaded, moved); recomputed at every call when a tensor has no
    version counter (an inference tensor, created under inference_mode) and while
    ``torch.compile`` traces (the compiled graph computes it from the live weights)."""
    if torch.compiler.is_compiling():
        return make()
    try:
        full_key = (key, *(None if t is None else (t.device, t.data_ptr(), t._version) for t in tensors))
    except RuntimeError:
        return make()
    kept = module.__dict__.get(name)
    if kept is None or kept[0] != full_key:
        kept = module.__dict__[name] = (full_key, make())
    return kept[1]


def _kept_casts(module: nn.Module, dtype: torch.dtype):
    """``(weight, bias)`` of ``module`` in ``dtype``, cast once per weight version."""
    weight, bias = module.weight, module.bias
    return kept_across_calls(
        module, "_kept_casts", dtype, (weight, bias),
        lambda: (weight.detach().to(dtype), None if bias is None else bias.detach().to(dtype)),
    )


#: rows from which a bfloat16 product of :class:`Linear` on a CPU goes through the op
#: ``linear`` (measured choice); below it the dispatch would cost more than any difference
LINEAR_OP_FROM_ROWS = 4096


class Linear(nn.Linear):
    """``nn.Linear`` that keeps its 16-bit weight copy across calls under autocast. A large
    bfloat16 product on a CPU (:data:`LINEAR_OP_FROM_ROWS` rows or more: Hiera's projections,
    the memory attention's) is the op ``linear``: torch's product, or oneDNN's fused linear
    that adds the bias inside the product instead of copying it into the output first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = autocast_weight_dtype(x, self.weight)
        if dtype is None:
            return F.linear(x, self.weight, self.bias)
        if dtype == torch.bfloat16 and x.device.type == "cpu" and x.numel() >= LINEAR_OP_FROM_ROWS * x.shape[-1]:
            return linear_op(x, self)
        return F.linear(x, *_kept_casts(self, dtype))


def _linear_onednn_refusal(x: torch.Tensor, layer: nn.Module) -> str | None:
    reason = _onednn_refusal(x)
    if reason is not None:
        return reason
    if autocast_weight_dtype(x, layer.weight) != torch.bfloat16:
        return "for the bfloat16 fast mode under autocast (float32 keeps torch's products)"
    return None


def _linear_reference(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    dtype = autocast_weight_dtype(x, layer.weight)
    return F.linear(x, *_kept_casts(layer, dtype)) if dtype is not None else F.linear(x, layer.weight, layer.bias)


def _linear_onednn(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    return _ONEDNN_LINEAR(x.to(torch.bfloat16), *_kept_casts(layer, torch.bfloat16), "none", [], "")


def _linear_shape_class(x: torch.Tensor, layer: nn.Module) -> str:
    rows = x.numel() // max(1, x.shape[-1])
    return f"rows {size_class(rows)}, {layer.in_features} -> {layer.out_features}"


def _linear_example(device: str) -> tuple:
    """Hiera-T's first qkv projection at image size 1024: 256 x 256 tokens, 96 -> 288."""
    with torch.device(device):
        return torch.zeros(1, 256, 256, 96), Linear(96, 288)


linear_op = Op("linear", example=_linear_example, shape_class=_linear_shape_class, kind="model")
linear_op.add_backend("onednn", _linear_onednn, _linear_onednn_refusal)
linear_op.add_backend("reference", _linear_reference)


def kept_bias(module: nn.Module, dtype: torch.dtype):
    """``module.bias`` in ``dtype`` for an op that casts it itself (kept across calls like the
    layers' weights when autograd is off), or the bias unchanged."""
    bias = module.bias
    if bias is None or bias.dtype == dtype or torch.is_grad_enabled() or bias.dtype != torch.float32:
        return bias
    return _kept_casts(module, dtype)[1]


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` that keeps its 16-bit weight copy across calls under autocast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = autocast_weight_dtype(x, self.weight)
        if dtype is None:
            return self._conv_forward(x, self.weight, self.bias)
        return self._conv_forward(x, *_kept_casts(self, dtype))


class ConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` that keeps its 16-bit weight copy across calls under autocast.

    On a CPU, a transposed convolution whose kernel equals its stride (SAM's 2x2 / stride 2
    upscaler) runs as what it is, one matrix product per pixel block: the tiles do not overlap,
    so ``out[:, :, s*i + a, s*j + b] = x[:, :, i, j] @ W[:, :, a, b] + bias``. torch's CPU
    kernel for it is 1.6-1.8x slower than that GEMM (5.9 vs 3.4 ms for the 256 -> 64 channel,
    64x64 -> 128x128 call on the 2-core Xeon); the sums are the same (float32: bit-identical
    there; bfloat16 under autocast: the same up to the last bit of some outputs).
    Without autograd only: training keeps torch's kernel and its gradients.
    """

    def forward(self, x: torch.Tensor, output_size=None) -> torch.Tensor:
        dtype = autocast_weight_dtype(x, self.weight)
        casts = None if dtype is None or output_size is not None else _kept_casts(self, dtype)
        weight, bias = (self.weight, self.bias) if casts is None else casts
        if (output_size is None and x.device.type == "cpu" and x.dim() == 4 and not torch.is_grad_enabled()
                and self._tiles_do_not_overlap()):
            return _tiled_conv_transpose2d(x, weight, bias)
        if casts is None:
            return super().forward(x, output_size)
        return F.conv_transpose2d(
            x, weight, bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )

    def _tiles_do_not_overlap(self) -> bool:
        return (
            tuple(self.kernel_size) == tuple(self.stride)
            and tuple(self.padding) == (0, 0)
            and tuple(self.output_padding) == (0, 0)
            and tuple(self.dilation) == (1, 1)
            and self.groups == 1
            and self.padding_mode == "zeros"
        )


def _tiled_conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias) -> torch.Tensor:
    """``conv_transpose2d(x, weight, bias, stride=kernel_size)`` as one GEMM: ``x [B, Ci, H, W]``,
    ``weight [Ci, Co, kh, kw]`` -> ``[B, Co, H * kh, W * kw]``."""
    b, ci, h, w = x.shape
    co, kh, kw = weight.shape[1:]
    # [B, HW, Ci] @ [Ci, Co * kh * kw] (+ the bias inside the product, added before rounding as
    # the convolution does); under autocast the product runs in its 16-bit dtype
    rows, cols = x.flatten(2).transpose(1, 2), weight.reshape(ci, co * kh * kw)
    if bias is None:
        y = torch.matmul(rows, cols)
    else:
        y = torch.baddbmm(bias.repeat_interleave(kh * kw).view(1, 1, -1), rows, cols.expand(b, -1, -1))
    y = y.view(b, h, w, co, kh, kw)
    if is_channels_last(x):
        # channels-last in, channels-last out, as torch's convolution does: the tiles move as
        # runs of Co channels ([B, H, kh, W, kw, Co]), and the adds and LayerNorm2d after it read
        # the same layout as SAM's channels-last high-resolution features
        tiles = y.permute(0, 1, 4, 2, 5, 3).contiguous()
        return tiles.view(b, h * kh, w * kw, co).permute(0, 3, 1, 2)
    tiles = y.permute(0, 3, 1, 4, 2, 5)  # [B, Co, H, kh, W, kw]
    return tiles.contiguous().view(b, co, h * kh, w * kw)


# ---------------------------------------------------------------------------------------------
# a residual add and the LayerNorm of its result, an op: torch's add, LayerNorm and cast (three
# passes over the token stream), or one C++ pass under bfloat16 autocast


def residual_norm(norm: nn.Module, x: torch.Tensor, delta: torch.Tensor | None = None):
    """``s = x + delta`` (``x`` when ``delta`` is None) and ``norm(s)``, the latter in the dtype
    the next product reads under autocast (the one a kept weight copy would have; the input's
    otherwise). Returns ``(s, normed)``; ``s`` is a new tensor when ``delta`` is given."""
    return residual_norm_op(norm, x, delta)


def _residual_norm_reference(norm: nn.Module, x: torch.Tensor, delta: torch.Tensor | None):
    s = x if delta is None else x + delta
    normed = norm(s)
    dtype = autocast_weight_dtype(normed, norm.weight) if isinstance(norm, nn.LayerNorm) and norm.weight is not None else None
    return s, normed if dtype is None or normed.dtype == dtype else normed.to(dtype)


def _residual_norm_cpp_refusal(norm: nn.Module, x: torch.Tensor, delta: torch.Tensor | None) -> str | None:
    if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None or len(norm.normalized_shape) != 1:
        return "the norm is not a LayerNorm over the last dim with a weight and a bias"
    if autocast_weight_dtype(x, norm.weight) != torch.bfloat16:
        return "the exact float32 mode (and autograd) keeps torch's LayerNorm"
    reason = extension_refusal("cpu", x=x)
    if reason is not None:
        return reason
    tensors = {"x": x} if delta is None else {"x": x, "delta": delta}
    for name, t in tensors.items():
        if t.dtype not in (torch.float32, torch.bfloat16) or not t.is_contiguous():
            return f"{name} is {t.dtype}{'' if t.is_contiguous() else ', not contiguous'}: the kernel reads contiguous float32 / bfloat16 rows"
    if delta is not None and delta.shape != x.shape:
        return f"delta {list(delta.shape)} is not x's shape {list(x.shape)} (no broadcasting)"
    if x.shape[-1] != norm.normalized_shape[0] or norm.weight.dtype != torch.float32 or norm.bias.dtype != torch.float32:
        return "the norm's float32 weights must match x's last dim"
    return None


def _residual_norm_cpp(norm: nn.Module, x: torch.Tensor, delta: torch.Tensor | None):
    """One pass per row in C++ (csrc/layer_norm.cpp): the add (float32, or bfloat16 when both
    inputs are, as torch rounds it), the LayerNorm of the sum in float32, the result rounded to
    bfloat16 -- bit-equal sums; normed values one bfloat16 ulp from torch's in about 3 of 10^5
    (the row statistics summed in another order)."""
    if delta is None:
        return x, torch.ops.sam2_fast.layer_norm_bf16(x, norm.weight, norm.bias, norm.eps)
    return torch.ops.sam2_fast.add_layer_norm_bf16(x, delta, norm.weight, norm.bias, norm.eps)


def _residual_norm_shape_class(norm: nn.Module, x: torch.Tensor, delta: torch.Tensor | None) -> str:
    dtype = str(x.dtype).removeprefix("torch.")
    added = "" if delta is None else " + " + str(delta.dtype).removeprefix("torch.")
    return f"{dtype}{added} {size_class(x.numel() // max(x.shape[-1], 1))} rows x {x.shape[-1]}"


def _residual_norm_example(device: str) -> tuple:
    """Hiera-T's first block at image size 1024: its float32 stream plus the attention's
    bfloat16 output, normalised over 96 channels."""
    with torch.device(device):
        return nn.LayerNorm(96, eps=1e-6), torch.zeros(1, 256, 256, 96), torch.zeros(1, 256, 256, 96, dtype=torch.bfloat16)


residual_norm_op = Op("residual_norm", example=_residual_norm_example, shape_class=_residual_norm_shape_class, kind="model")
residual_norm_op.add_backend("cpp", _residual_norm_cpp, _residual_norm_cpp_refusal)
residual_norm_op.add_backend("reference", _residual_norm_reference)
