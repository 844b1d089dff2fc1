"""Layers that keep their 16-bit weight copies across calls under autocast + inference_mode
(``sam2_fast.modeling.common``): bit-identical to torch's layers, refreshed when the weights
change, out of the way of autograd, and no model weight is cast twice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sam2_fast import SAM2ImagePredictor, build_sam2, build_sam2_video_predictor
from sam2_fast.modeling.common import Conv2d, ConvTranspose2d, Linear
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.init import random_state_dict
from sam2_fast.sample import sample_image, sample_video_frame, sample_video_objects

_CASTS = {torch.ops.aten.to.dtype, torch.ops.aten.to.dtype_layout, torch.ops.aten._to_copy.default,
          torch.ops.aten.to.device, torch.ops.aten.to.other}


class ParameterCasts(TorchDispatchMode):
    """Records the shapes of parameters that an op casts to another dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.cast: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _CASTS and isinstance(args[0], nn.Parameter) and out.dtype != args[0].dtype:
            self.cast.append(tuple(args[0].shape))
        return out


PAIRS = [
    (lambda: nn.Linear(24, 40), Linear, (3, 5, 24)),
    (lambda: nn.Conv2d(6, 10, kernel_size=3, padding=1), Conv2d, (2, 6, 9, 11)),
    (lambda: nn.ConvTranspose2d(8, 4, kernel_size=2, stride=2), ConvTranspose2d, (2, 8, 5, 7)),
]


def _pair(make, ours_cls):
    torch.manual_seed(0)
    theirs = make()
    ours = ours_cls.__new__(ours_cls)
    nn.Module.__init__(ours)
    ours.__dict__.update({k: v for k, v in theirs.__dict__.items() if k != "_parameters"})
    ours._parameters = {k: nn.Parameter(v.detach().clone()) for k, v in theirs._parameters.items()}
    return theirs, ours


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("make, ours_cls, shape", PAIRS, ids=["linear", "conv2d", "conv_transpose2d"])
def test_bit_identical_to_torch_and_cast_once(make, ours_cls, shape, dtype):
    theirs, ours = _pair(make, ours_cls)
    x = torch.randn(shape)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype):
        expected = theirs(x)
        first = ours(x)
        with ParameterCasts() as casts:
            second = ours(x)
    assert first.dtype == expected.dtype == dtype
    assert torch.equal(first, second)
    if ours_cls is ConvTranspose2d:
        # on a CPU the non-overlapping transposed convolution runs as one GEMM: the same sums,
        # accumulated in another order by some CPUs' 16-bit kernels (AMD EPYC: fp16 differs
        # in the last bit of a few outputs); one 16-bit rounding step at most
        torch.testing.assert_close(first, expected, rtol=2 * torch.finfo(dtype).eps, atol=torch.finfo(dtype).eps)
    else:
        assert torch.equal(first, expected)
    assert casts.cast == []  # the kept copy was used, nothing cast again
    # without autocast: the float32 layer, untouched
    with torch.inference_mode():
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("make, ours_cls, shape", PAIRS, ids=["linear", "conv2d", "conv_transpose2d"])
def test_copy_follows_weight_changes(make, ours_cls, shape):
    theirs, ours = _pair(make, ours_cls)
    x = torch.randn(shape)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)
    with torch.inference_mode(), autocast:
        ours(x)
    with torch.no_grad():  # in place, as an optimiser or a fine-tuning step would
        for module in (theirs, ours):
            module.weight.mul_(-2.0)
    with torch.inference_mode(), autocast:
        assert torch.equal(ours(x), theirs(x))
    new = {k: torch.randn_like(v) for k, v in theirs.state_dict().items()}
    theirs.load_state_dict(new)
    ours.load_state_dict(new)
    with torch.inference_mode(), autocast:
        assert torch.equal(ours(x), theirs(x))


@pytest.mark.parametrize("make, ours_cls, shape", PAIRS, ids=["linear", "conv2d", "conv_transpose2d"])
def test_autograd_is_not_affected(make, ours_cls, shape):
    theirs, ours = _pair(make, ours_cls)
    x = torch.randn(shape)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours(x)  # a kept copy exists; training must not use it
    for module in (theirs, ours):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module(x).float().square().sum().backward()
    assert ours.weight.grad is not None
    assert torch.equal(ours.weight.grad, theirs.weight.grad)


@pytest.mark.parametrize("make, ours_cls, shape", PAIRS, ids=["linear", "conv", "conv_transpose"])
def test_layers_run_on_the_meta_device(make, ours_cls, shape):
    """Shape tracing on the meta device (autocast knows no such device type): the layers
    give torch's output shapes instead of raising."""
    ref = make().to("meta")
    ours = ours_cls(**_ctor_args(ref)).to("meta")
    x = torch.empty(shape, device="meta")
    with torch.inference_mode():
        out = ours(x)
    assert out.device.type == "meta" and out.shape == ref(x).shape


def _ctor_args(layer: nn.Module) -> dict:
    if isinstance(layer, nn.Linear):
        return dict(in_features=layer.in_features, out_features=layer.out_features)
    return dict(in_channels=layer.in_channels, out_channels=layer.out_channels, kernel_size=layer.kernel_size,
                stride=layer.stride, padding=layer.padding)


def test_weights_created_under_inference_mode():
    """Inference tensors have no version counter: the layer casts per call, as torch does."""
    with torch.inference_mode():
        layer = Linear(8, 4)
        x = torch.randn(2, 8)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
    expected = torch.nn.functional.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16())
    assert torch.equal(out, expected)


def _model_state_dict():
    sd = random_state_dict(PRESETS["sam2.1-hiera-tiny"], seed=3)
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0
    return sd


def test_image_predictor_casts_no_weight_twice():
    model = build_sam2("sam2.1-hiera-tiny", None, device="cpu", hydra_overrides_extra=["++model.image_size=256"])
    model.load_state_dict(_model_state_dict())
    predictor = SAM2ImagePredictor(model)
    image = sample_image(96, 128)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        predictor.set_image(image)
        first = predictor.predict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
        with ParameterCasts() as casts:
            predictor.set_image(image)
            second = predictor.predict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
    assert casts.cast == [], f"parameters cast again: {casts.cast}"
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_video_frame_casts_no_weight_twice():
    predictor = build_sam2_video_predictor(
        "sam2.1-hiera-tiny", None, device="cpu", hydra_overrides_extra=["++model.image_size=256"]
    )
    predictor.load_state_dict(_model_state_dict())
    predictor.show_progress = False
    frames = np.stack([sample_video_frame(i, 96, 128) for i in range(4)])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        state = predictor.init_state(frames)
        for k, (x, y) in enumerate(sample_video_objects(0, 96, 128).values()):
            predictor.add_new_points_or_box(state, 0, k, points=[(x, y)], labels=[1])
        for _ in predictor.propagate_in_video(state, max_frame_num_to_track=2):
            pass
        with ParameterCasts() as casts:
            for _ in predictor.propagate_in_video(state, start_frame_idx=3):
                pass
    assert casts.cast == [], f"parameters cast again: {casts.cast}"


@pytest.mark.parametrize(
    "ci, co, kernel, stride, bias, shape",
    [
        (32, 16, 2, 2, True, (1, 32, 12, 20)),  # SAM's upscaler shape, one image
        (16, 8, 2, 2, True, (3, 16, 7, 5)),  # a batch, odd sizes
        (8, 4, 3, 3, False, (2, 8, 4, 6)),  # 3x3 tiles, no bias
        (8, 4, 3, 2, True, (2, 8, 5, 5)),  # overlapping tiles: torch's kernel
    ],
    ids=["upscaler", "batch", "3x3-no-bias", "overlapping"],
)
def test_transposed_convolution_as_tiles_matches_torch(ci, co, kernel, stride, bias, shape):
    torch.manual_seed(1)
    theirs = nn.ConvTranspose2d(ci, co, kernel, stride, bias=bias)
    ours = ConvTranspose2d(ci, co, kernel, stride, bias=bias)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(shape)
    with torch.inference_mode():
        expected, got = theirs(x), ours(x)
        assert got.shape == expected.shape and got.is_contiguous()
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)  # fp32: the same sums
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected, got = theirs(x), ours(x)
        assert got.dtype == expected.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), expected.float(), rtol=1.6e-2, atol=1e-2)  # bf16
    # a channels-last input gives a channels-last output, as torch's convolution does, with the
    # same values (the decoder's upscaler: its adds and LayerNorm2d then read one layout)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected, got = theirs(x_cl), ours(x_cl)
    assert got.shape == expected.shape
    assert got.is_contiguous(memory_format=torch.channels_last) == expected.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # with autograd the layer still trains
    ours(x).square().sum().backward()
    assert ours.weight.grad is not None and ours.weight.grad.abs().sum() > 0
