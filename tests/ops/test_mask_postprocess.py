"""upsample_masks (op ``mask_postprocess``): every backend that runs here against the official
post-processing (``SAM2Transforms.postprocess_masks`` + threshold, ``calculate_stability_score``),
plus bad input, the dispatcher and torch.compile tracing.

How masks are compared: the oracle's upsampled float32 logits ``z`` decide each pixel. A pixel is
*in the rounding band* of a threshold ``t`` when ``|z - t| <= BAND[dtype] * max(1, max|logits|)``
(per mask); outside the band a backend's mask must equal ``z > t`` exactly, inside it may differ
(the Triton interpreter rounds a fused multiply-add twice). Counts may differ from the oracle's by
at most the band's pixel count. ``reference`` and ``chunked`` run aten's own kernel, and ``cpp``
its arithmetic in C++, so they are compared bit for bit; ``cpp`` also with thresholds placed
exactly on the oracle's values, where one unit in the last place flips a pixel. ``triton`` is held to the band everywhere: on a GPU it should be bitwise
too (it computes aten's CPU arithmetic, fused multiply-adds included), but that also depends on
how the CPU build of torch that computes the oracle was compiled.

The Triton cases run on cuda when there is a GPU; otherwise in a ``TRITON_INTERPRET=1`` child
pytest (Triton 3.8 picks the interpreter when ``@triton.jit`` decorates the kernel, at import).
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import tempfile
from typing import NamedTuple

import pytest
import torch

import sam2_fast.ops.mask_postprocess as mask_postprocess_module
from sam2_fast.ops import BackendError, UpsampledMasks, get_op, upsample_masks, use_backend
from sam2_fast.ops._triton import interpreting, triton_refusal

official_amg = pytest.importorskip("sam2.utils.amg")
official_transforms = pytest.importorskip("sam2.utils.transforms")

OP = "mask_postprocess"
EPS32 = torch.finfo(torch.float32).eps
# Rounding band, relative to max(1, max |logits|). Every dtype is upcast to float32 exactly
# before interpolating, so all three share float32's: a mul-then-add differs from a fused
# multiply-add by at most an ulp of its operands' scale, at each of the 3 levels of the lerp
# (rows, then between rows); 8 eps leaves a margin over those 3.
BAND = {torch.float32: 8 * EPS32, torch.bfloat16: 8 * EPS32, torch.float16: 8 * EPS32}
# at most this fraction of pixels may fall in the band: random logits seldom do (bfloat16 ones
# sometimes interpolate to exactly 0 between opposite neighbours)
MAX_BAND_FRACTION = 1e-2
DTYPES = list(BAND)

HAS_TRITON = importlib.util.find_spec("triton") is not None
if HAS_TRITON and torch.cuda.is_available():
    TRITON_DEVICE: str | None = "cuda"
elif HAS_TRITON and interpreting():
    TRITON_DEVICE = "cpu"
else:
    TRITON_DEVICE = None  # the cases run in test_triton_kernel_cases_in_interpreter
IN_CHILD = "runs in the TRITON_INTERPRET=1 child of test_triton_kernel_cases_in_interpreter"


class Case(NamedTuple):
    shape: tuple[int, int, int, int]  # [B, C, h, w] logits
    size: tuple[int, int]  # (H, W) output
    threshold: float
    offset: float | None


# small shapes: the interpreter runs each 16x128 tile in numpy
CASES = {
    "upsample_x4": Case((1, 1, 8, 8), (32, 32), 0.0, None),
    "upsample_non_integer": Case((2, 3, 16, 16), (37, 150), 0.5, 1.0),
    "downsample_non_integer": Case((1, 2, 33, 47), (10, 9), -1.25, 1.0),
    "rows_copied_columns_upsampled": Case((2, 2, 13, 7), (13, 200), 0.0, 0.5),
    "same_size": Case((1, 1, 9, 11), (9, 11), 0.25, None),
    "one_pixel_input": Case((1, 1, 1, 1), (5, 7), 0.0, 1.0),
    "one_pixel_output": Case((1, 2, 8, 8), (1, 1), 0.0, 1.0),
    "sam_like_odd": Case((1, 3, 32, 32), (45, 81), 0.0, 0.0),
}


def make_logits(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Gaussian logits, standard deviation 4 (decoder logits are mostly within +-20)."""
    generator = torch.Generator().manual_seed(seed)
    return (4 * torch.randn(shape, generator=generator)).to(dtype)


def run_in_child(selection: str, **env: str) -> None:
    """This file's tests matching ``-k selection`` in a child pytest with ``env`` added; all
    of them must run and pass."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", selection],
        env={**os.environ, **env},
        # outside the repository: `python -m` puts the cwd on sys.path, and the source tree
        # must not shadow the installed package (tests/conftest.py refuses that)
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]


# ---------------------------------------------------------------------------------------------
# oracle


def official_scores(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Official SAM2Transforms.postprocess_masks (no hole filling): float32 [B, C, H, W]."""
    transforms = official_transforms.SAM2Transforms(resolution=1024, mask_threshold=0.0)
    return transforms.postprocess_masks(logits.cpu(), size)


def band(scores: torch.Tensor, logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels of ``scores`` within rounding of ``threshold`` (see the module docstring)."""
    scale = logits.float().abs().amax((-2, -1), keepdim=True).clamp_min(1.0).cpu()
    return (scores - threshold).abs() <= BAND[logits.dtype] * scale


def count(mask: torch.Tensor) -> torch.Tensor:
    return mask.sum((-2, -1), dtype=torch.int32)


def assert_matches_official(
    result: UpsampledMasks, logits: torch.Tensor, case: Case, exact: bool
) -> None:
    b, c = case.shape[:2]
    assert result.masks.shape == (b, c, *case.size) and result.masks.dtype == torch.bool
    assert result.areas.shape == (b, c) and result.areas.dtype == torch.int32
    assert result.masks.device == logits.device and result.areas.device == logits.device
    scores = official_scores(logits, case.size)
    masks, areas = result.masks.cpu(), result.areas.cpu()
    expected = scores > case.threshold
    near = band(scores, logits, case.threshold)
    assert near.float().mean() <= MAX_BAND_FRACTION, "test data too close to the threshold"
    if exact:
        assert torch.equal(masks, expected)
        assert torch.equal(areas, count(expected))
    else:
        assert torch.equal(masks[~near], expected[~near])
        assert ((areas - count(expected)).abs() <= count(near)).all()
    assert torch.equal(areas, count(masks)), "areas must count the returned masks"

    if case.offset is None:
        assert result.stability is None
        return
    official = official_amg.calculate_stability_score(scores, case.threshold, case.offset)
    stability = result.stability.cpu()
    assert stability.shape == (b, c) and stability.dtype == torch.float32
    if exact:
        torch.testing.assert_close(stability, official, rtol=0, atol=0, equal_nan=True)
        return
    upper, lower = case.threshold + case.offset, case.threshold - case.offset
    clean = (count(band(scores, logits, upper)) == 0) & (count(band(scores, logits, lower)) == 0)
    torch.testing.assert_close(stability[clean], official[clean], rtol=0, atol=0, equal_nan=True)
    finite = official.isfinite()
    torch.testing.assert_close(stability[finite], official[finite], rtol=0, atol=1e-3)


def run_backend(backend: str, logits: torch.Tensor, case: Case) -> UpsampledMasks:
    with use_backend(backend, op=OP):
        selected = get_op(OP).select(logits, list(case.size), case.threshold, case.offset)
        assert selected.name == backend
        return upsample_masks(logits, case.size, case.threshold, case.offset)


# ---------------------------------------------------------------------------------------------
# reference and chunked: aten's own kernel, bit for bit


CPU_BACKENDS = ["reference", "chunked", "cpp"]


@pytest.fixture
def cpu_backend(request: pytest.FixtureRequest) -> str:
    if request.param == "cpp":
        request.getfixturevalue("extension")
    return request.param


@pytest.mark.parametrize("cpu_backend", CPU_BACKENDS, indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_cpu_backends_equal_official_postprocessing(cpu_backend: str, dtype: torch.dtype, name: str):
    """``cpp`` is held to the band on these small inputs: aten rounds some of them on another
    path (e.g. 8x8 -> 32x32); on the decoder's 256x256 logits it is bitwise (below)."""
    case = CASES[name]
    logits = make_logits(case.shape, dtype)
    result = run_backend(cpu_backend, logits, case)
    assert_matches_official(result, logits, case, exact=cpu_backend != "cpp")


@pytest.mark.parametrize("cpu_backend", CPU_BACKENDS, indirect=True)
def test_cpu_backends_at_predictor_size(cpu_backend: str):
    """3 masks of 256x256 to a 333x1001 image, as predict() does."""
    case = Case((1, 3, 256, 256), (333, 1001), 0.0, 1.0)
    logits = make_logits(case.shape, torch.float32, seed=1)
    assert_matches_official(run_backend(cpu_backend, logits, case), logits, case, exact=True)


@pytest.mark.parametrize(
    "shape, size",
    [
        ((3, 1, 256, 256), (720, 1280)),
        ((1, 3, 256, 256), (333, 1001)),
        ((2, 1, 256, 256), (1280, 720)),
        ((1, 2, 256, 256), (100, 77)),
    ],
    ids=["amg_720p", "predict_odd", "portrait", "downsample"],
)
def test_cpp_values_are_aten_bit_for_bit(extension, shape, size):
    """The mask decoder's 256x256 logits: thresholds exactly on 90 of the oracle's pixel
    values, where a value one unit in the last place off flips that pixel and changes a count.
    Plain multiply-adds instead of aten's fused ones (``fused=False``) fail this."""
    logits = make_logits(shape, torch.float32, seed=3)
    scores = official_scores(logits, size).reshape(-1, *size)
    generator = torch.Generator().manual_seed(4)
    picks = torch.randint(0, scores.numel(), (90,), generator=generator)
    levels = scores.flatten()[picks].reshape(30, 3).tolist()
    source = logits.reshape(-1, *shape[-2:])
    fused = mask_postprocess_module._cpp_rounding()
    for triple in levels:
        masks, counts = torch.ops.sam2_fast.upsample_threshold(source, *size, triple, fused)
        assert torch.equal(masks, scores > triple[0])
        expected = torch.stack([count(scores > level) for level in triple], dim=1)
        assert torch.equal(counts, expected)
    # the public function on the same path
    result = run_backend("cpp", logits, Case(shape, size, levels[0][0], None))
    assert torch.equal(result.masks.reshape(-1, *size), scores > levels[0][0])


def _emulated_bilinear(logits: torch.Tensor, size: tuple[int, int], fused: bool) -> torch.Tensor:
    """aten's taps and weights with each ``a * wa + b * wb`` rounded as ``upsample_threshold``
    rounds it: ``fused`` as one fused multiply-add ``fma(a, wa, b * wb)`` (emulated in float64:
    the product of two float32 is exact there), else each product and sum on its own."""

    def lerp(a, wa, b, wb):
        if fused:
            return (a.double() * wa.double() + (b * wb).double()).float()
        return a * wa + b * wb

    def taps(n_in: int, n_out: int):
        scale = torch.tensor(n_in, dtype=torch.float32) / n_out
        centre = torch.arange(n_out, dtype=torch.float32) + 0.5
        src = (scale.double() * centre.double() - 0.5).float() if fused else scale * centre - 0.5
        src = src.clamp_min(0.0)
        i0 = src.floor().long().clamp_max(n_in - 1)
        w1 = (src - i0.float()).clamp(0.0, 1.0)
        return i0, (i0 + 1).clamp_max(n_in - 1), 1.0 - w1, w1

    y0, y1, wy0, wy1 = taps(logits.shape[-2], size[0])
    x0, x1, wx0, wx1 = taps(logits.shape[-1], size[1])
    top = lerp(logits[:, y0][:, :, x0], wx0, logits[:, y0][:, :, x1], wx1)
    bottom = lerp(logits[:, y1][:, :, x0], wx0, logits[:, y1][:, :, x1], wx1)
    return lerp(top, wy0[:, None], bottom, wy1[:, None])


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("size", [(720, 1280), (37, 21), (300, 13)], ids=str)
def test_cpp_roundings_bit_for_bit(extension, fused, size):
    """Both roundings of the op (the probe picks one per machine) against their emulation:
    thresholds on 90 emulated values, where a value one unit in the last place off flips a
    pixel; widths that are not a multiple of the 8-pixel vector step cover the scalar tail."""
    logits = make_logits((3, 64, 48), torch.float32, seed=6)
    scores = _emulated_bilinear(logits, size, fused)
    other = _emulated_bilinear(logits, size, not fused)
    assert not torch.equal(scores, other), "the two roundings must differ on this data"
    generator = torch.Generator().manual_seed(7)
    picks = torch.randint(0, scores.numel(), (90,), generator=generator)
    for triple in scores.flatten()[picks].reshape(30, 3).tolist():
        masks, counts = torch.ops.sam2_fast.upsample_threshold(logits, *size, triple, fused)
        assert torch.equal(masks, scores > triple[0])
        assert torch.equal(counts, torch.stack([count(scores > t) for t in triple], dim=1))


def test_cpp_portable_copy_in_a_child(extension):
    """The kernel's portable copy (CPUs without AVX2 + FMA; SAM2_FAST_PORTABLE_CPU=1 selects
    it) passes the same bit-for-bit tests."""
    run_in_child("roundings_bit_for_bit or values_are_aten or rows_split", SAM2_FAST_PORTABLE_CPU="1")


def test_cpp_rounding_probe_finds_the_fused_rounding_where_aten_fuses(extension):
    """aten's AVX2 / AVX512 CPU kernels contract each lerp into a fused multiply-add."""
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        pytest.skip(f"aten runs its {capability} kernels here; their rounding is what the probe finds")
    assert mask_postprocess_module._probe_aten_rounding() is True


def test_cpp_rows_split_across_threads_give_one_result(extension):
    """One mask is split into bands of rows across threads, many masks are not: same bits."""
    logits = make_logits((6, 1, 64, 64), torch.float32, seed=5)
    case = Case((6, 1, 64, 64), (300, 200), 0.0, 1.0)
    together = run_backend("cpp", logits, case)
    for i in range(6):
        alone = run_backend("cpp", logits[i : i + 1], Case((1, 1, 64, 64), (300, 200), 0.0, 1.0))
        assert torch.equal(alone.masks[0], together.masks[i])
        assert torch.equal(alone.areas[0], together.areas[i])


@pytest.mark.parametrize("masks_per_group", [1, 2, 35])
def test_chunked_groups_equal_reference(monkeypatch: pytest.MonkeyPatch, masks_per_group: int):
    """35 masks in groups of 1, 2 (the last one short) or all at once."""
    case = Case((5, 7, 16, 16), (24, 40), 0.5, 2.0)
    monkeypatch.setattr(mask_postprocess_module, "CHUNK_ELEMENTS", masks_per_group * 24 * 40 + 1)
    logits = make_logits(case.shape, torch.float16, seed=2)
    ours, ref = run_backend("chunked", logits, case), run_backend("reference", logits, case)
    assert torch.equal(ours.masks, ref.masks) and torch.equal(ours.areas, ref.areas)
    torch.testing.assert_close(ours.stability, ref.stability, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------------------------------------------
# triton: on cuda, or in the interpreter (child process)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_triton_kernel_matches_official(dtype: torch.dtype, name: str):
    if TRITON_DEVICE is None:
        pytest.skip(IN_CHILD)
    case = CASES[name]
    logits = make_logits(case.shape, dtype).to(TRITON_DEVICE)
    result = run_backend("triton", logits, case)
    assert_matches_official(result, logits, case, exact=False)


def test_triton_kernel_cases_in_interpreter():
    """Without a GPU, run this file's Triton cases (names or ids with ``triton``) in a child
    with TRITON_INTERPRET=1."""
    if TRITON_DEVICE is not None:
        pytest.skip("the Triton cases run in this process")
    pytest.importorskip("triton")
    run_in_child("triton and not in_interpreter", TRITON_INTERPRET="1")


# ---------------------------------------------------------------------------------------------
# every backend that runs here: edge cases


@pytest.fixture(params=["triton", "cpp", "chunked", "reference"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "triton" and TRITON_DEVICE is None:
        pytest.skip(IN_CHILD)
    if request.param == "cpp":
        request.getfixturevalue("extension")
    return request.param


def device_of(backend: str) -> str:
    return TRITON_DEVICE if backend == "triton" else "cpu"


def test_pixels_exactly_at_the_threshold_are_background(backend: str):
    """``>`` is strict: same-size output copies the logits, a constant 0 interpolates to 0."""
    logits = torch.tensor([-1.0, 0.0, 1.0, 0.0]).repeat(8).reshape(1, 2, 4, 4)
    same = run_backend(backend, logits.to(device_of(backend)), Case((1, 2, 4, 4), (4, 4), 0.0, 0.0))
    assert torch.equal(same.masks.cpu(), logits > 0)
    assert same.areas.tolist() == [[4, 4]] and same.stability.tolist() == [[1.0, 1.0]]
    zeros = torch.zeros(1, 1, 4, 4, device=device_of(backend))
    upsampled = run_backend(backend, zeros, Case((1, 1, 4, 4), (9, 13), 0.0, 0.0))
    assert not upsampled.masks.any() and math.isnan(upsampled.stability.item())


def test_empty_union_gives_nan_stability_like_official(backend: str):
    logits = torch.full((1, 2, 8, 8), -5.0, device=device_of(backend))
    logits[0, 1] = 5.0
    result = run_backend(backend, logits, Case((1, 2, 8, 8), (20, 30), 0.0, 1.0))
    official = official_amg.calculate_stability_score(
        official_scores(logits, (20, 30)), 0.0, 1.0
    )
    assert result.areas.tolist() == [[0, 600]]
    torch.testing.assert_close(result.stability.cpu(), official, rtol=0, atol=0, equal_nan=True)
    assert math.isnan(result.stability[0, 0].item())


@pytest.mark.parametrize(
    "layout", ["transposed", "channels_last", "every_other_mask"], ids=str
)
def test_non_contiguous_logits_give_the_contiguous_result(backend: str, layout: str):
    base = make_logits((2, 4, 12, 12), torch.float32).to(device_of(backend))
    logits = {
        "transposed": base.transpose(-2, -1),
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "every_other_mask": base[:, ::2],
    }[layout]
    case = Case(tuple(logits.shape), (30, 17), 0.0, 1.0)
    result = run_backend(backend, logits, case)
    expected = run_backend(backend, logits.contiguous(), case)
    assert torch.equal(result.masks, expected.masks)
    assert torch.equal(result.areas, expected.areas)
    torch.testing.assert_close(result.stability, expected.stability, rtol=0, atol=0, equal_nan=True)


def test_empty_batch(backend: str):
    logits = torch.zeros(0, 3, 16, 16, device=device_of(backend))
    result = run_backend(backend, logits, Case((0, 3, 16, 16), (20, 30), 0.0, 1.0))
    assert result.masks.shape == (0, 3, 20, 30) and result.areas.shape == (0, 3)
    assert result.stability.shape == (0, 3)


# ---------------------------------------------------------------------------------------------
# bad input


GOOD = torch.zeros(1, 3, 8, 8)

BAD_INPUTS = [
    ("not_a_tensor", dict(logits=GOOD.numpy()), TypeError, "logits must be a torch.Tensor"),
    ("rank_3", dict(logits=GOOD[0]), ValueError, r"\[B, C, h, w\].*\[3, 8, 8\]"),
    ("int_dtype", dict(logits=GOOD.long()), TypeError, "float32, bfloat16 or float16.*int64"),
    ("float64", dict(logits=GOOD.double()), TypeError, "float32, bfloat16 or float16.*float64"),
    ("empty_spatial", dict(logits=GOOD[..., :0]), ValueError, r"non-empty \[h, w\]"),
    ("size_one_number", dict(size=720), TypeError, r"size must be \(H, W\)"),
    ("size_three_numbers", dict(size=(1, 2, 3)), TypeError, r"size must be \(H, W\)"),
    ("size_floats", dict(size=(720.0, 1280.0)), TypeError, r"size must be \(H, W\)"),
    ("size_zero", dict(size=(0, 1280)), ValueError, r"positive ints.*\(0, 1280\)"),
    ("size_negative", dict(size=(720, -1)), ValueError, r"positive ints"),
    ("threshold_string", dict(threshold="0"), TypeError, "threshold must be a real number"),
    ("threshold_nan", dict(threshold=float("nan")), ValueError, "threshold must not be NaN"),
    ("offset_negative", dict(stability_offset=-1.0), ValueError, r"stability_offset must be >= 0"),
    ("offset_bool", dict(stability_offset=True), TypeError, "stability_offset must be a real"),
]


@pytest.mark.parametrize(
    "kwargs, error, match", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS]
)
def test_bad_input_names_the_argument(kwargs: dict, error: type, match: str):
    args = dict(logits=GOOD, size=(20, 30), threshold=0.0, stability_offset=None) | kwargs
    with pytest.raises(error, match=match):
        upsample_masks(**args)


def test_infinite_threshold_and_offset_are_accepted():
    result = upsample_masks(GOOD, (4, 4), threshold=-math.inf, stability_offset=math.inf)
    assert result.masks.all() and torch.equal(result.stability, torch.zeros(1, 3))


# ---------------------------------------------------------------------------------------------
# dispatcher and torch.compile


def test_forcing_a_backend_that_cannot_run_raises_with_the_reason():
    meta = torch.empty(1, 1, 8, 8, device="meta")  # the op runs its fake on meta: ask select()
    with use_backend("chunked", op=OP), pytest.raises(BackendError, match="on meta.*runs on cpu"):
        get_op(OP).select(meta, [16, 16], 0.0, None)
    if triton_refusal(GOOD) is not None:  # no GPU and no interpreter: triton refuses cpu
        with use_backend("triton", op=OP), pytest.raises(BackendError, match="TRITON_INTERPRET"):
            upsample_masks(GOOD, (16, 16))


def test_backends_in_order_and_explained():
    op = get_op(OP)
    assert op.backend_names == ["triton", "cpp", "chunked", "reference", "compiled"]
    verdicts = op.explain(*op.example("cpu"))
    assert verdicts["chunked"] is None and verdicts["reference"] is None
    from sam2_fast._ext import load_extension

    if load_extension()[0] is not None:
        assert verdicts["cpp"] is None and op.select(*op.example("cpu")).name == "cpp"
    if TRITON_DEVICE is None:
        assert "cuda" in verdicts["triton"]


def test_custom_op_passes_opcheck():
    logits = make_logits((1, 2, 8, 8), torch.float32)
    for offset in (None, 1.0):
        args = (logits, [9, 13], 0.0, offset)
        torch.library.opcheck(torch.ops.sam2_fast.mask_postprocess.default, args)


def test_cpp_op_passes_opcheck(extension):
    logits = make_logits((3, 8, 8), torch.float32)
    for thresholds in ([0.0], [0.0, 1.0, -1.0]):
        args = (logits, 9, 13, thresholds, True)
        torch.library.opcheck(torch.ops.sam2_fast.upsample_threshold.default, args)


def test_cpp_op_checks_its_inputs(extension):
    op = torch.ops.sam2_fast.upsample_threshold
    with pytest.raises(ValueError, match=r"upsample_threshold: logits must be \[N, h, w\]"):
        op(torch.zeros(1, 1, 4, 4), 8, 8, [0.0], True)
    with pytest.raises(TypeError, match="upsample_threshold: logits must be float32, got Half"):
        op(torch.zeros(1, 4, 4, dtype=torch.half), 8, 8, [0.0], True)
    with pytest.raises(ValueError, match="out_h and out_w must be > 0, got 0 and 8"):
        op(torch.zeros(1, 4, 4), 0, 8, [0.0], True)
    with pytest.raises(ValueError, match="thresholds must hold 1 to 3 values, got 4"):
        op(torch.zeros(1, 4, 4), 8, 8, [0.0] * 4, True)
    with pytest.raises(ValueError, match="out_h \\* out_w must fit the int32 counts, got 65536 x 65536"):
        op(torch.zeros(1, 4, 4), 65536, 65536, [0.0], True)
    verdict = get_op(OP).explain(torch.zeros(1, 1, 4, 4), [65536, 65536], 0.0, None)["cpp"]
    assert "more than 2**31 - 1 pixels" in verdict


def test_torch_compile_traces_through_the_op():
    def postprocess(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = upsample_masks(logits * 2, (20, 30), 0.0, 1.0)
        return result.masks, result.stability

    logits = make_logits((1, 3, 8, 8), torch.float32)
    compiled = torch.compile(postprocess, backend="aot_eager", fullgraph=True)
    for got, expected in zip(compiled(logits), postprocess(logits)):
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
