"""The predictors' model interface (sam2_fast.modeling.interface): the SAM 2 model provides it,
a model that lacks part of it is refused by name, and the image predictor runs on any model
that provides it (not only on SAM2Base)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_fast import SAM2ImagePredictor, build_sam2
from sam2_fast.errors import InvalidTypeError
from sam2_fast.modeling.interface import PromptableImageModel, TrackingModel, model_refusal


@pytest.fixture(scope="module")
def model():
    return build_sam2("sam2.1-hiera-tiny", None, device="cpu").eval()


def test_the_sam2_model_provides_both_interfaces(model) -> None:
    assert model_refusal(model) is None and model_refusal(model, TrackingModel) is None
    assert isinstance(model, PromptableImageModel) and isinstance(model, TrackingModel)


def test_a_model_without_part_of_it_is_refused_by_name(model) -> None:
    class NoDecoder(torch.nn.Module):
        image_size = 1024

    reason = model_refusal(NoDecoder())
    assert reason is not None and "sam_mask_decoder" in reason and "forward_image" in reason
    assert "image_size" not in reason
    with pytest.raises(InvalidTypeError, match="sam_model: expected a SAM 2 model.*sam_mask_decoder"):
        SAM2ImagePredictor(NoDecoder())


def test_the_image_predictor_runs_on_another_class_with_the_interface(model) -> None:
    """A wrapper that is not a SAM2Base (another family's model would be) gets the same masks."""

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.image_size = inner.image_size
            self.directly_add_no_mem_embed = inner.directly_add_no_mem_embed
            self.no_mem_embed = inner.no_mem_embed
            self.sam_prompt_encoder = inner.sam_prompt_encoder
            self.sam_mask_decoder = inner.sam_mask_decoder

        @property
        def device(self):
            return self.inner.device

        def forward_image(self, img_batch):
            return self.inner.forward_image(img_batch)

        def _prepare_backbone_features(self, backbone_out):
            return self.inner._prepare_backbone_features(backbone_out)

        def compute_context(self):
            return self.inner.compute_context()

    wrapped = Wrapped(model)
    assert model_refusal(wrapped) is None and model_refusal(wrapped, TrackingModel) is not None
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    click = dict(point_coords=np.array([[40.0, 50.0]]), point_labels=np.array([1]))
    results = []
    for m in (model, wrapped):
        predictor = SAM2ImagePredictor(m)
        predictor.set_image(image)
        results.append(predictor.predict(**click))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_the_trunk_is_built_by_its_config_kind(monkeypatch) -> None:
    """The image encoder's backbone comes from the registry of backbone kinds: a config with
    another kind gets that kind's builder, an unregistered kind is refused by name."""
    import dataclasses

    from sam2_fast.errors import InvalidInputError
    from sam2_fast.modeling import builders
    from sam2_fast.modeling.config import PRESETS
    from sam2_fast.modeling.hiera import Hiera

    @dataclasses.dataclass(frozen=True)
    class ToyBackbone:
        kind = "toy"
        hiera: object = PRESETS["sam2.1-hiera-tiny"].trunk

        @property
        def channel_list(self):
            return self.hiera.channel_list

    built = []

    def build_toy(config):
        built.append(config)
        return Hiera(config.hiera)

    config = dataclasses.replace(PRESETS["sam2.1-hiera-tiny"], trunk=ToyBackbone())
    with pytest.raises(InvalidInputError, match="no backbone is registered for ToyBackbone \\(kind 'toy'\\); known kinds: hiera"):
        builders.build_image_encoder(config)
    monkeypatch.setitem(builders.BACKBONES, "toy", build_toy)
    with torch.device("meta"):
        encoder = builders.build_image_encoder(config)
    assert built == [config.trunk] and isinstance(encoder.trunk, Hiera)
    assert builders.BACKBONES["hiera"] is Hiera
