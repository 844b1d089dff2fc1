"""Helpers shared by the ops: argument checks with readable messages, and the verdict of the
compiled backends (``cpp`` / ``cuda``, the ops of ``sam2_fast._C``) on their inputs."""

from __future__ import annotations

import torch

from sam2_fast._ext import load_extension
from sam2_fast.errors import InvalidTypeError
from sam2_fast.ops._dispatch import Op, _forced_backend

BINARY_DTYPES = (torch.bool, torch.uint8)

_dispatch_stack_depth = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 1)


def via_custom_op(op: Op) -> bool:
    """Whether a fused ``op`` (window / rope attention, mask post-processing) goes through its
    ``torch.library`` custom op rather than straight to its dispatcher: under torch.compile
    (one traced node) and under a Python dispatch mode (``FlopCounterMode``, fake tensors),
    which see the op as one node with its formula. Plain eager calls skip it: its Python
    dispatch costs 40-80 us a call. With the ``reference`` backend forced for ``op`` it never
    does: a traced graph then holds the plain torch ops, which is what an exported graph
    (``torch.export``, AOTInductor, ONNX) must hold to run without this package."""
    forced = _forced_backend(op)
    if forced is not None and forced[0] == "reference":
        return False
    return torch.compiler.is_compiling() or _dispatch_stack_depth() > 0


def check_tensor(op: str, name: str, value: object) -> None:
    """TypeError unless ``value`` (argument ``name`` of ``op``) is a tensor."""
    if not isinstance(value, torch.Tensor):
        raise InvalidTypeError(f"{op}: {name} must be a torch.Tensor, got {type(value).__name__}")


def check_binary_dtype(op: str, name: str, masks: torch.Tensor) -> None:
    """TypeError unless ``masks`` is bool or uint8 (uint8: every nonzero value is foreground)."""
    if masks.dtype not in BINARY_DTYPES:
        raise InvalidTypeError(
            f"{op}: {name} must be bool or uint8 (nonzero = foreground), got {masks.dtype}; "
            "threshold scores first, e.g. `logits > 0`"
        )


def _subject(name: str) -> str:
    return f"{name} {'are' if name.endswith('s') else 'is'}"


def extension_refusal(device: str, **tensors: torch.Tensor) -> str | None:
    """Why the compiled backend for ``device`` (``"cpu"``: cpp, ``"cuda"``: cuda) cannot run an
    op on ``tensors`` (keyword = the argument's name in the op), or None when it can."""
    for name, tensor in tensors.items():
        if tensor.device.type != device:
            return f"{_subject(name)} on {tensor.device.type}, this backend runs on {device}"
    ext, reason = load_extension()
    if ext is None:
        return f"extension {reason}"
    if device == "cuda" and not ext.build_info()["cuda"]:
        return (
            f"{_subject(next(iter(tensors)))} on cuda but the CUDA ops were not compiled "
            f"({ext.build_info()['cuda_skip_reason']})"
        )
    return None


_FLASH_DTYPES = (torch.float32, torch.bfloat16)
_flash_refusals: dict[torch.dtype, str | None] = {}


def flash_attention_refusal(dtype: torch.dtype) -> str | None:
    """Why ``torch.ops.sam2_fast.flash_attention`` (csrc/attention.cpp) cannot run ``dtype``
    inputs on this CPU (no AVX-512, no oneDNN micro-kernel for the dtype: probed once by the
    extension), or None. Call after :func:`extension_refusal` accepted the inputs."""
    if dtype not in _FLASH_DTYPES:
        return f"inputs are {dtype}, this backend runs float32 or bfloat16"
    if dtype not in _flash_refusals:
        reason = torch.ops.sam2_fast.flash_attention_unsupported(dtype == torch.bfloat16)
        _flash_refusals[dtype] = reason or None
    return _flash_refusals[dtype]


def flash_inputs_refusal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the C++ flash attention cannot run ``q, k, v [B, heads, N, D]``: not on the CPU, no
    extension, no keys, a dtype it cannot run on this CPU; or None."""
    reason = extension_refusal("cpu", q=q, k=k, v=v)
    if reason is not None:
        return reason
    if k.shape[2] == 0:
        return "no keys (the online softmax needs at least one)"
    return flash_attention_refusal(q.dtype)


def masks_cuda_refusal(masks: torch.Tensor) -> str | None:
    """``supports`` of a ``cuda`` backend whose only tensor argument is ``masks``."""
    return extension_refusal("cuda", masks=masks)


def masks_cpp_refusal(masks: torch.Tensor) -> str | None:
    """``supports`` of a ``cpp`` backend whose only tensor argument is ``masks``."""
    return extension_refusal("cpu", masks=masks)


def measured_slower_on_gpu(*args: object) -> str | None:
    """``prefer`` of compiled CUDA backends that measured slower than the torch reference on
    the same GPU tensors (64 masks of 720x1280 on an H200; bench/gpu/README.md): the built-in
    default only; with tuning on, both are timed on the user's GPU (sam2_fast.ops._tuning)."""
    return (
        "measured slower than the torch reference on the same GPU tensors (H200, 64 masks of "
        "720x1280; bench/gpu/README.md): the default when nothing is measured; the tuner times both"
    )
