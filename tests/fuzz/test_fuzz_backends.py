"""Every backend of every registered op gives the reference backend's result on random small
inputs (shapes, dtypes, strides and arguments drawn by Hypothesis).

One test per (op, backend) pair of the registry, ``reference`` and ``compiled`` excluded
(``compiled`` would compile once per example). Which backends run where:

* ``cpp``, ``chunked``, ``blocked``: always (``cpp`` skips only when the extension was genuinely
  not built);
* ``cuda``: on a machine with a GPU and the CUDA ops compiled, else skipped;
* ``triton``: on the GPU when there is one, else on CPU tensors in Triton's interpreter
  (``TRITON_INTERPRET=1``, the ``triton_interpreter`` fixture of tests/conftest.py). With tiny
  shapes an interpreted call takes 0.03 s (rope, mask post-processing) to 0.3 s (window
  attention), so these run with fewer examples.

The inputs are drawn inside each backend's declared domain (e.g. ``cpp`` NMS: float32 and
float64); the test asserts that the backend accepts them, then compares it with ``reference``
on the same inputs: exactly for integer and boolean outputs, within the tolerances below for
floating-point ones.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sam2_fast.ops.mask_postprocess as mask_postprocess_module
from fuzz_support import device_of, extension_runs, mask_arrays, mask_tensors, runnable_backends
from sam2_fast.modeling.position_encoding import axial_rope_cos_sin
from sam2_fast.ops import (
    BackendError,
    attention,
    box_nms,
    connected_components,
    get_op,
    list_ops,
    masks_to_boxes,
    rle_decode,
    rle_encode,
    rle_encode_compressed,
    rope_attention,
    upsample_masks,
    use_backend,
    window_attention,
)
from test_mask_postprocess import band, count, official_scores

from sam2_fast.ops.window_attention import max_pool_nhwc

# official SAM2Transforms (the oracle of the mask post-processing) scripts its transforms
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

FLOATS = (torch.float32, torch.bfloat16, torch.float16)
SEEDS = st.integers(0, 2**32 - 1)

# rope / window attention: max |backend - reference| / max(1, max |reference|), per input dtype.
# Both sides accumulate in float32; 16-bit inputs round the rotated q / k, the probabilities and
# the output to 8 (bf16) or 11 (fp16) mantissa bits, each side at different places.
ATTENTION_TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def _flash_unsupported(dtype: torch.dtype) -> bool:
    """Whether the C++ flash kernel refuses ``dtype`` on this CPU (no AVX-512, or oneDNN has no
    micro-kernel for it under this CPU / ``ONEDNN_MAX_CPU_ISA``): its ``cpp`` backends may then
    refuse inputs of their domain."""
    from sam2_fast._ext import load_extension
    from sam2_fast.ops._common import flash_attention_refusal

    return load_extension()[0] is None or flash_attention_refusal(dtype) is not None


@dataclass(frozen=True)
class Fuzzed:
    """How to fuzz one op: ``inputs(dtype)`` draws keyword arguments of ``call`` (the public
    function), ``op_args`` gives what the dispatcher then sees, ``dtypes`` the input dtypes
    each backend declares, ``compare(backend, got, expected, inputs)`` checks a result.
    ``edge(inputs)``: inputs that a backend other than the reference may refuse (its
    ``supports`` says why, and automatic selection must then run another backend)."""

    inputs: Callable[[torch.dtype | None], st.SearchStrategy[dict]]
    call: Callable[..., Any]
    op_args: Callable[..., tuple]
    compare: Callable[[str, Any, Any, dict], None]
    dtypes: dict[str, tuple] = field(default_factory=lambda: {"*": (None,)})
    edge: Callable[[dict], bool] = lambda inputs: False


def assert_equal(backend: str, got: Any, expected: Any, inputs: dict) -> None:
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        # bit for bit; NaN (an undefined stability score) equals NaN
        torch.testing.assert_close(a.cpu(), b.cpu(), rtol=0, atol=0, equal_nan=True, msg=backend)


def assert_attention_close(backend: str, got: torch.Tensor, expected: torch.Tensor, inputs: dict) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    dtype = expected.dtype
    err = (got.cpu().double() - expected.double()).abs().max().item() if got.numel() else 0.0
    scale = max(1.0, expected.double().abs().max().item()) if got.numel() else 1.0
    assert err / scale <= ATTENTION_TOLERANCE[dtype], f"{backend} {dtype}: rel err {err / scale:.2e}"


# ---------------------------------------------------------------------------------------------
# inputs of each op


@st.composite
def nms_inputs(draw: st.DrawFn, dtype: torch.dtype) -> dict:
    """Continuous boxes, or boxes on a coarse grid with duplicates, tied scores, zero-area and
    inverted boxes."""
    n = draw(st.integers(0, 40))
    rng = np.random.default_rng(draw(SEEDS))
    if draw(st.booleans()):
        corners = rng.random((n, 2)) * 100
        boxes = np.concatenate([corners, corners + rng.random((n, 2)) * 40], axis=1)
        scores = rng.random(n)
    else:
        corners = rng.integers(0, 8, (n, 2))
        boxes = np.concatenate([corners, corners + rng.integers(-1, 6, (n, 2))], axis=1)
        scores = rng.integers(0, 3, n)
    threshold = draw(st.one_of(st.sampled_from([0.0, 0.5, 1.0]), st.floats(0.0, 1.0)))
    return dict(
        boxes=torch.tensor(boxes, dtype=dtype), scores=torch.tensor(scores, dtype=dtype), iou_threshold=threshold
    )


@st.composite
def image_inputs(draw: st.DrawFn, dtype: None) -> dict:
    mask = draw(mask_tensors(st.tuples(st.integers(0, 3), st.just(1)), min_side=0))
    return dict(mask=mask, connectivity=draw(st.sampled_from([4, 8])))


@st.composite
def runs_inputs(draw: st.DrawFn, dtype: None) -> dict:
    masks = draw(mask_arrays(st.tuples(st.integers(0, 3)), min_side=0))
    counts, offsets = rle_encode(torch.from_numpy(masks))
    return dict(counts=counts, offsets=offsets, height=masks.shape[1], width=masks.shape[2])


@st.composite
def logits_inputs(draw: st.DrawFn, dtype: torch.dtype) -> dict:
    shape = draw(st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 12), st.integers(1, 12)))
    generator = torch.Generator().manual_seed(draw(SEEDS))
    logits = (4 * torch.randn(shape, generator=generator)).to(dtype)
    if draw(st.booleans()):  # strided: every other column of a wider tensor
        logits = torch.cat([logits, torch.zeros_like(logits)], dim=-1)[..., ::2]
    return dict(
        logits=logits,
        size=draw(st.tuples(st.integers(1, 24), st.integers(1, 24))),
        threshold=draw(st.one_of(st.just(0.0), st.floats(-3.0, 3.0))),
        stability_offset=draw(st.one_of(st.none(), st.floats(0.0, 3.0))),
        masks_per_chunk=draw(st.integers(1, 6)),
    )


@st.composite
def rope_inputs(draw: st.DrawFn, dtype: torch.dtype) -> dict:
    """Memory attention: ``frames`` copies of the ``side x side`` query grid as keys, then
    ``num_exclude`` unrotated keys (object pointers); values shared by the heads or not."""
    b, heads, side = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 4))
    d = draw(st.sampled_from([4, 8, 12, 16, 24, 32]))
    frames, num_exclude = draw(st.integers(0, 3)), draw(st.integers(0, 5))
    dv = draw(st.integers(1, 32))
    nq, nk = side * side, frames * side * side + num_exclude
    generator = torch.Generator().manual_seed(draw(SEEDS))
    q, k = (torch.randn(b, heads, n, d, generator=generator).to(dtype) for n in (nq, nk))
    v = torch.randn(b, 1 if draw(st.booleans()) else heads, nk, dv, generator=generator).to(dtype)
    cos, sin = axial_rope_cos_sin(d, side, side, 10000.0)
    scale = draw(st.one_of(st.none(), st.floats(0.05, 2.0)))
    return dict(q=q, k=k, v=v, cos=cos, sin=sin, num_k_exclude_rope=num_exclude, scale=scale)


@st.composite
def window_inputs(draw: st.DrawFn, dtype: torch.dtype) -> dict:
    q_stride = draw(st.sampled_from([1, 2]))
    window_size = q_stride * draw(st.integers(0, 4))  # 0: global attention
    heads, head_dim = draw(st.integers(1, 2)), draw(st.integers(1, 24))
    h, w = draw(st.integers(q_stride, 10)), draw(st.integers(q_stride, 10))
    generator = torch.Generator().manual_seed(draw(SEEDS))
    c3 = 3 * heads * head_dim
    qkv = torch.randn(draw(st.integers(1, 2)), h, w, c3, generator=generator).to(dtype)
    bias = torch.randn(c3, generator=generator).to(dtype) if draw(st.booleans()) else None
    return dict(qkv=qkv, num_heads=heads, window_size=window_size, q_stride=q_stride, qkv_bias=bias)


@st.composite
def plain_attention_inputs(draw: st.DrawFn, dtype: torch.dtype) -> dict:
    """The mask decoder's attention: a few prompt tokens and many image tokens either way,
    head-split views (transposed, as the decoder makes them) or contiguous tensors."""
    b, heads = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    nq, nk = draw(st.integers(1, 40)), draw(st.integers(0, 40))
    d, dv = draw(st.sampled_from([2, 4, 8, 16, 32])), draw(st.integers(1, 24))
    generator = torch.Generator().manual_seed(draw(SEEDS))
    q, k = (torch.randn(b, n, heads, d, generator=generator).to(dtype).transpose(1, 2) for n in (nq, nk))
    v = torch.randn(b, nk, heads, dv, generator=generator).to(dtype).transpose(1, 2)
    if draw(st.booleans()):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    scale = draw(st.one_of(st.none(), st.floats(0.05, 2.0)))
    return dict(q=q, k=k, v=v, scale=scale)


@st.composite
def pool_inputs(draw: st.DrawFn, dtype: torch.dtype) -> dict:
    """A channels-last map, contiguous or a channel slice of a wider one (a query out of
    qkv), with NaN sometimes."""
    stride = draw(st.integers(1, 3))
    b, h, w, c = draw(st.integers(1, 2)), draw(st.integers(0, 9)), draw(st.integers(0, 9)), draw(st.integers(1, 40))
    generator = torch.Generator().manual_seed(draw(SEEDS))
    wide = torch.randn(b, h, w, c + draw(st.integers(0, 8)), generator=generator).to(dtype)
    x = wide[..., :c]
    if draw(st.booleans()) and x.numel():
        x[..., draw(st.integers(0, c - 1))] = float("nan")
    return dict(x=x, stride=stride)


def window_attention_in_bands_of_one_window_row(**inputs) -> torch.Tensor:
    """``window_attention`` with the banded backend's bands one row of windows high (tiny
    inputs would otherwise fit one band, which is the reference itself)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(importlib.import_module("sam2_fast.ops.window_attention"), "BAND_BYTES", 1)
        return window_attention(**inputs)


# ---------------------------------------------------------------------------------------------
# mask post-processing: the public result, compared through the oracle's rounding band


def upsample(logits, size, threshold, stability_offset, masks_per_chunk):
    """``upsample_masks`` with the chunked backend's buffer holding ``masks_per_chunk`` masks
    (tiny masks would otherwise all fit in one chunk, which is the reference itself)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mask_postprocess_module, "CHUNK_ELEMENTS", masks_per_chunk * size[0] * size[1] + 1)
        result = upsample_masks(logits, size, threshold, stability_offset)
    return tuple(t for t in result if t is not None)


def assert_same_upsampled_masks(backend: str, got: tuple, expected: tuple, inputs: dict) -> None:
    """``chunked`` runs aten's kernel: bit for bit. ``triton`` and ``cpp`` compute the same
    arithmetic but may round a pixel within float32 rounding of a threshold the other way (the
    band of tests/ops/test_mask_postprocess.py: the interpreter's two roundings per fused
    multiply-add; aten's other loop on some small inputs); counts then differ by at most the
    band's pixels."""
    if backend not in ("triton", "cpp"):
        assert_equal(backend, got, expected, inputs)
        return
    logits, threshold, offset = inputs["logits"], inputs["threshold"], inputs["stability_offset"]
    (masks, areas, *stability), (ref_masks, ref_areas, *ref_stability) = got, expected
    assert masks.shape == ref_masks.shape and masks.dtype == ref_masks.dtype == torch.bool
    near = band(official_scores(logits, inputs["size"]), logits, threshold)
    masks, areas = masks.cpu(), areas.cpu()
    assert torch.equal(masks[~near], ref_masks[~near])
    assert ((areas - ref_areas).abs() <= count(near)).all()
    assert torch.equal(areas, count(masks)), "areas must count the returned masks"
    if offset is not None:
        scores = official_scores(logits, inputs["size"])
        clean = (count(band(scores, logits, threshold + offset)) == 0) & (
            count(band(scores, logits, threshold - offset)) == 0
        )
        torch.testing.assert_close(
            stability[0].cpu()[clean], ref_stability[0][clean], rtol=0, atol=0, equal_nan=True
        )


# ---------------------------------------------------------------------------------------------
# the registry's ops


FUZZED: dict[str, Fuzzed] = {
    "attention": Fuzzed(
        plain_attention_inputs, attention,
        lambda q, k, v, scale: (q, k, v, 1 / math.sqrt(q.shape[-1]) if scale is None else scale),
        assert_attention_close, dtypes={"*": FLOATS, "cpp": FLOATS[:2]},
        # no keys: the kernel refuses (the reference returns zeros); float16 and CPUs without a
        # micro-kernel: refused too
        edge=lambda inputs: inputs["k"].shape[2] == 0 or _flash_unsupported(inputs["q"].dtype),
    ),
    "max_pool_nhwc": Fuzzed(
        pool_inputs, max_pool_nhwc, lambda x, stride: (x, stride), assert_equal, dtypes={"*": FLOATS[:2]},
    ),
    "box_nms": Fuzzed(
        nms_inputs, box_nms, lambda boxes, scores, iou_threshold: (boxes, scores, float(iou_threshold)),
        assert_equal, dtypes={"cpp": (torch.float32, torch.float64)},
    ),
    "connected_components": Fuzzed(
        image_inputs, connected_components, lambda mask, connectivity: (mask, connectivity), assert_equal
    ),
    "mask_postprocess": Fuzzed(
        logits_inputs, upsample,
        lambda logits, size, threshold, stability_offset, masks_per_chunk: (
            logits, list(size), threshold, stability_offset
        ),
        assert_same_upsampled_masks, dtypes={"*": FLOATS},
    ),
    "masks_to_boxes": Fuzzed(
        lambda dtype: mask_tensors(st.lists(st.integers(0, 3), max_size=3).map(tuple), min_side=0).map(
            lambda masks: dict(masks=masks)
        ),
        masks_to_boxes, lambda masks: (masks,), assert_equal,
    ),
    "rle_decode": Fuzzed(
        runs_inputs, rle_decode, lambda counts, offsets, height, width: (counts, offsets, height, width),
        assert_equal,
    ),
    "rle_encode": Fuzzed(
        lambda dtype: mask_tensors(st.tuples(st.integers(0, 3)), min_side=0).map(lambda m: dict(masks=m)),
        rle_encode, lambda masks: (masks,), assert_equal,
    ),
    "rle_encode_compressed": Fuzzed(
        lambda dtype: mask_tensors(st.tuples(st.integers(0, 3)), min_side=0).map(lambda m: dict(masks=m)),
        rle_encode_compressed, lambda masks: (masks,), assert_equal,
    ),
    "rope_attention": Fuzzed(
        rope_inputs, rope_attention,
        lambda q, k, v, cos, sin, num_k_exclude_rope, scale: (
            q, k, v, cos, sin, num_k_exclude_rope, 1 / math.sqrt(q.shape[-1]) if scale is None else scale
        ),
        assert_attention_close,
        # on a GPU the kernel ships 16-bit only (float32 runs the reference)
        dtypes={"blocked": FLOATS[:2], "cpp": FLOATS[:2],
                "triton": FLOATS if not torch.cuda.is_available() else FLOATS[1:]},
        # no keys: the kernels refuse; the C++ kernel where this CPU lacks a micro-kernel
        edge=lambda inputs: inputs["k"].shape[2] == 0 or _flash_unsupported(inputs["q"].dtype),
    ),
    "window_attention": Fuzzed(
        window_inputs, window_attention_in_bands_of_one_window_row,
        lambda qkv, num_heads, window_size, q_stride, qkv_bias: (qkv, num_heads, window_size, q_stride, qkv_bias),
        assert_attention_close,
        dtypes={"*": FLOATS, "blocked": FLOATS[:2], "cpp": FLOATS[:2], "cpp_grid": FLOATS[:2]},
        # the banded backend needs two rows of windows; the cpp kernel channel pairs
        edge=lambda inputs: (inputs["window_size"] == 0 or inputs["qkv"].shape[1] <= inputs["window_size"]
                             or inputs["qkv"].shape[-1] // 3 // inputs["num_heads"] % 2 == 1
                             or _flash_unsupported(inputs["qkv"].dtype)),
    ),
}

PAIRS = [
    (op.name, backend)
    for op in list_ops()
    if op.kind == "tensor"
    for backend in op.backend_names
    if backend not in ("reference", "compiled")
]
# the interpreter is slow: fewer examples for the triton backends
TRITON_SETTINGS = settings(max_examples=15, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_every_registered_op_is_fuzzed() -> None:
    """Every tensor op (the model-step ops have their own tests: test_feed_forward,
    test_hiera_bands, test_shared_image_decoder, ...)."""
    assert sorted(FUZZED) == sorted(op.name for op in list_ops() if op.kind == "tensor")
    assert all("reference" in op.backend_names for op in list_ops())


def moved(inputs: dict, device: str) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def check_backend_matches_reference(op_name: str, backend: str, inputs: dict) -> None:
    fuzzed, op = FUZZED[op_name], get_op(op_name)
    on_device = moved(inputs, device_of(backend))
    refusal = op.backend(backend).supports(*fuzzed.op_args(**on_device))
    if refusal is None:
        with use_backend(backend, op=op_name):
            got = fuzzed.call(**on_device)
    else:
        assert fuzzed.edge(inputs), f"{backend} refuses inputs of its domain: {refusal}"
        with use_backend(backend, op=op_name), pytest.raises(BackendError, match=re.escape(refusal)):
            fuzzed.call(**on_device)
        got = fuzzed.call(**on_device)  # automatic selection runs another backend
    with use_backend("reference", op=op_name):
        expected = fuzzed.call(**inputs)
    fuzzed.compare(backend, got, expected, inputs)


def drawn_inputs(data: st.DataObject, op_name: str, backend: str) -> dict:
    fuzzed = FUZZED[op_name]
    dtypes = fuzzed.dtypes.get(backend, fuzzed.dtypes.get("*", (None,)))
    dtype = data.draw(st.sampled_from(dtypes), label="dtype")
    return data.draw(fuzzed.inputs(dtype), label="inputs")


CPU_PAIRS = [pair for pair in PAIRS if pair[1] != "triton"]
TRITON_PAIRS = [pair for pair in PAIRS if pair[1] == "triton"]


@pytest.mark.parametrize("op_name, backend", CPU_PAIRS, ids=[f"{o}-{b}" for o, b in CPU_PAIRS])
@given(data=st.data())
def test_backend_matches_reference(op_name: str, backend: str, data: st.DataObject) -> None:
    if backend not in runnable_backends(get_op(op_name)):
        why = "no CUDA device with the CUDA ops" if backend == "cuda" else "extension not built"
        assert backend in ("cuda", "cpp") and (backend == "cuda" or not extension_runs()), backend
        pytest.skip(why)
    check_backend_matches_reference(op_name, backend, drawn_inputs(data, op_name, backend))


@pytest.mark.parametrize("op_name", [o for o, _ in TRITON_PAIRS])
@TRITON_SETTINGS
@given(data=st.data())
def test_triton_backend_matches_reference(request: pytest.FixtureRequest, op_name: str, data: st.DataObject) -> None:
    """On the GPU, or in the interpreter (one fixture for all examples of the test)."""
    if device_of("triton") == "cpu":
        request.getfixturevalue("triton_interpreter")
    check_backend_matches_reference(op_name, "triton", drawn_inputs(data, op_name, "triton"))
