"""SAM2ImagePredictor.predict on random combinations of prompts: points (0 to 4, inside or
outside the image, every label), a box (maybe inverted), a mask prompt (right or wrong size),
``multimask_output``, ``normalize_coords`` and ``return_logits``.

Each call either returns the official outputs (shapes, dtypes, finite values, 0/1 masks unless
``return_logits``), or raises an :class:`~sam2_fast.errors.InvalidInputError` naming an argument
that breaks a documented rule (points inside the image, ``x0 <= x1`` and ``y0 <= y1``, the mask
prompt's size), and the predictor then predicts as before. The rules are modelled here, so an
accepted bad prompt fails the test as much as a rejected good one.

The model is sam2.1-hiera-tiny with random weights at ``image_size=256`` (as tests/test_amg.py),
so a mask prompt is ``[1, 64, 64]``; the image is the smallest of
tests/test_image_predictor_input.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from oracle_support import OFFICIAL_CONFIGS, import_oracle
from sam2_fast import SAM2ImagePredictor, build_sam2
from sam2_fast.errors import InvalidInputError, SAM2FastError
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.sample import sample_image
from sam2_fast.zoo import get_model_info
from test_image_parity import assert_same_prediction

# official SAM2Transforms scripts its transforms with torch.jit
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")

NAME = "sam2.1-hiera-tiny"
OVERRIDES = ["++model.image_size=256"]
H, W = 64, 80
LABELS = (-1, 0, 1, 2, 3)  # padding, background, foreground, box corners
GOOD = dict(point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]), multimask_output=False)
# each example decodes one or two prompts with the full mask decoder (0.1-1 s on two cores)
PREDICT_SETTINGS = settings(max_examples=25)


@pytest.fixture(scope="module")
def state_dict() -> dict:
    return random_state_dict(get_model_info(NAME).config, seed=3)


@pytest.fixture(scope="module")
def predictor(state_dict: dict) -> SAM2ImagePredictor:
    model = build_sam2(NAME, device="cpu", hydra_overrides_extra=OVERRIDES)
    model.load_state_dict(state_dict)
    p = SAM2ImagePredictor(model.eval())
    p.set_image(sample_image(H, W))
    return p


@pytest.fixture(scope="module")
def reference(predictor: SAM2ImagePredictor) -> tuple:
    return predictor.predict(**GOOD)


def mask_size(predictor: SAM2ImagePredictor) -> int:
    return predictor.model.sam_prompt_encoder.mask_input_size[0]


# ---------------------------------------------------------------------------------------------
# prompts, and which of their arguments break a documented rule


def coordinate(scale: float) -> st.SearchStrategy[float]:
    """A coordinate along a side of ``scale``: mostly inside ``[0, scale]``, sometimes on its
    ends or up to a quarter of it outside."""
    return st.one_of(
        st.floats(0.0, scale),
        st.sampled_from([0.0, scale]),
        st.floats(-0.25 * scale, 1.25 * scale),
    )


@st.composite
def prompts(draw: st.DrawFn, mask_hw: int) -> tuple[dict, set[str]]:
    """Keyword arguments of ``predict`` and the names of the arguments that break a rule."""
    normalize = draw(st.booleans())
    sx, sy = (W, H) if normalize else (1.0, 1.0)
    kwargs: dict = dict(
        multimask_output=draw(st.booleans()), return_logits=draw(st.booleans()), normalize_coords=normalize
    )
    bad: set[str] = set()
    n = draw(st.integers(0, 4))
    if n:
        coords = np.array([[draw(coordinate(sx)), draw(coordinate(sy))] for _ in range(n)])
        kwargs["point_coords"] = coords
        kwargs["point_labels"] = np.array(draw(st.lists(st.sampled_from(LABELS), min_size=n, max_size=n)))
        if ((coords < 0) | (coords > [sx, sy])).any():
            bad.add("point_coords")
    if draw(st.booleans()):
        box = [draw(coordinate(sx)), draw(coordinate(sy)), draw(coordinate(sx)), draw(coordinate(sy))]
        kwargs["box"] = np.array(box)
        if box[0] > box[2] or box[1] > box[3]:
            bad.add("box")
    if draw(st.booleans()):
        side = draw(st.sampled_from([mask_hw, 256 if mask_hw != 256 else 128]))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        kwargs["mask_input"] = (5 * rng.standard_normal((1, side, side))).astype(np.float32)
        if side != mask_hw:
            bad.add("mask_input")
    return kwargs, bad


def assert_official_outputs(out: tuple, kwargs: dict, mask_hw: int) -> None:
    """Shapes and dtypes of official ``SAM2ImagePredictor.predict``: masks ``[C, H, W]``,
    IoU predictions ``[C]``, low-res logits ``[C, 256, 256]`` at image size 1024 (here
    ``[C, 64, 64]``), float32, ``C`` = 3 with ``multimask_output`` else 1."""
    masks, scores, low_res = out
    c = 3 if kwargs.get("multimask_output", True) else 1
    assert masks.shape == (c, H, W) and scores.shape == (c,) and low_res.shape == (c, mask_hw, mask_hw)
    assert masks.dtype == scores.dtype == low_res.dtype == np.float32
    for array in out:
        assert np.isfinite(array).all()
    if not kwargs.get("return_logits", False):
        assert set(np.unique(masks).tolist()) <= {0.0, 1.0}
    assert np.abs(low_res).max() <= 32.0  # clamped, as official


def assert_still_usable(predictor: SAM2ImagePredictor, reference: tuple) -> None:
    for got, expected in zip(predictor.predict(**GOOD), reference):
        np.testing.assert_array_equal(got, expected)


# ---------------------------------------------------------------------------------------------
# tests


@PREDICT_SETTINGS
@given(data=st.data())
def test_predict_returns_official_outputs_or_names_the_bad_argument(
    predictor: SAM2ImagePredictor, reference: tuple, data: st.DataObject
) -> None:
    kwargs, bad = data.draw(prompts(mask_size(predictor)), label="prompt")
    event(f"breaks {sorted(bad)}" if bad else "valid")
    try:
        out = predictor.predict(**kwargs)
    except SAM2FastError as error:  # any other exception fails the test
        assert bad, f"a valid prompt was rejected: {error!r}"
        assert isinstance(error, InvalidInputError), repr(error)
        assert any(name in str(error) for name in bad), f"{error} does not name one of {sorted(bad)}"
        assert_still_usable(predictor, reference)
        return
    assert not bad, f"predict accepted {sorted(bad)}"
    assert_official_outputs(out, kwargs, mask_size(predictor))


@pytest.fixture(scope="module")
def official_predictor(state_dict: dict):
    import_oracle()
    from sam2.build_sam import build_sam2 as official_build
    from sam2.sam2_image_predictor import SAM2ImagePredictor as OfficialPredictor

    model = official_build(OFFICIAL_CONFIGS[NAME], None, device="cpu", hydra_overrides_extra=OVERRIDES)
    model.load_state_dict(state_dict)
    p = OfficialPredictor(model.eval())
    # the official predictor hard-codes the backbone sizes of image_size=1024
    s = model.image_size
    p._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    p.set_image(sample_image(H, W))
    return p


@pytest.mark.parametrize("multimask_output", [True, False])
@pytest.mark.parametrize("return_logits", [False, True])
def test_empty_prompt_predicts_like_official(
    predictor: SAM2ImagePredictor, official_predictor, multimask_output: bool, return_logits: bool
) -> None:
    """No points, box or mask: official SAM 2 decodes the image with no sparse prompt tokens
    and the no-mask embedding (``SAM2ImagePredictor._predict`` with all prompts None); so does
    this predictor, with the same outputs."""
    kwargs = dict(multimask_output=multimask_output, return_logits=return_logits)
    with torch.no_grad():
        ours, official = predictor.predict(**kwargs), official_predictor.predict(**kwargs)
    assert_official_outputs(ours, kwargs, mask_size(predictor))
    assert_same_prediction(ours, official, return_logits)
