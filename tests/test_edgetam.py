"""EdgeTAM, the second built-in family: its zoo entry, weights (random, official keys, strict
loading, the transformers layout), and every predictor, the mask generator and ``sam2-fast
track`` running on it unchanged (random weights, 256-pixel inputs)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch


def _require(name: str):
    """The module, or a skip when it is missing -- a failure in CI (CI=true)."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(name)
    return pytest.importorskip(name)


_require("timm")

from cli_support import run_cli  # noqa: E402

from sam2_fast.automatic_mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402
from sam2_fast.build_sam import build_sam2_random  # noqa: E402
from sam2_fast.checkpoint import infer_variant, load_model_weights  # noqa: E402
from sam2_fast.errors import CheckpointError  # noqa: E402
from sam2_fast.modeling.common import meta_device  # noqa: E402
from sam2_fast.modeling.edgetam_config import EDGETAM, EdgeTAMConfig  # noqa: E402
from sam2_fast.modeling.init import random_state_dict  # noqa: E402
from sam2_fast.modeling.interface import TrackingModel, model_refusal  # noqa: E402
from sam2_fast.modeling.sam2_base import SAM2Base  # noqa: E402
from sam2_fast.predictors.image_predictor import SAM2ImagePredictor  # noqa: E402
from sam2_fast.predictors.stream_predictor import SAM2StreamPredictor  # noqa: E402
from sam2_fast.sample import sample_image, sample_video_frame, sample_video_objects  # noqa: E402
from sam2_fast.zoo import get_family, get_model_info, list_models  # noqa: E402

SIZE = 256
OVERRIDES = [f"++model.image_size={SIZE}"]


@pytest.fixture(scope="module")
def weights():
    return random_state_dict(EDGETAM, seed=0)


@pytest.fixture(scope="module")
def video_predictor():
    return build_sam2_random("edgetam", device="cpu", video=True, hydra_overrides_extra=OVERRIDES)


def test_zoo_names_the_variant_and_its_family():
    info = get_model_info("facebook/EdgeTAM")
    assert info is get_model_info("edgetam") is get_model_info("configs/edgetam.yaml")
    assert (info.family, info.hub_repo_id, info.filename) == ("edgetam", "facebook/EdgeTAM", "edgetam.pt")
    assert list_models(family="edgetam") == ["edgetam"]
    assert isinstance(info.config, EdgeTAMConfig)
    assert get_family(info.config).name == "edgetam"  # not SAM 2's, whose config it extends
    assert get_family(info.config.replace(num_maskmem=5)).name == "edgetam"
    assert set(get_family("edgetam").transformers_model_types) == {"edgetam", "edgetam_video"}


def test_importing_the_zoo_imports_neither_torch_nor_timm():
    code = "import sys, sam2_fast.zoo as z; z.get_model_info('edgetam'); print('torch' in sys.modules, 'timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_random_weights_have_the_official_keys(weights):
    with meta_device():
        model = SAM2Base.from_config(EDGETAM)
    assert list(weights) == list(model.state_dict())
    for key in (
        "image_encoder.trunk.body.stem.conv1.c.weight",
        "spatial_perceiver.latents",
        "spatial_perceiver.latents_2d",
        "spatial_perceiver.layers.1.attn.to_kv.weight",
        "spatial_perceiver.layers.1.self_ff.3.weight",
        "memory_attention.layers.1.cross_attn_image.k_proj.weight",
        "image_encoder.neck.convs.3.conv.weight",
    ):
        assert key in weights, key
    assert "memory_attention.layers.2.norm1.weight" not in weights  # two layers
    assert weights["spatial_perceiver.latents"].shape == (256, 64)
    assert weights["memory_attention.layers.0.cross_attn_image.k_proj.weight"].shape == (256, 64)
    running_vars = [v for k, v in weights.items() if k.endswith("running_var")]
    assert running_vars and all(bool((v > 0).all()) for v in running_vars)


def test_loading_is_strict_with_a_readable_diff(weights):
    assert infer_variant(weights).name == "edgetam"
    broken = dict(weights)
    broken.pop("spatial_perceiver.latents_2d")
    broken["spatial_perceiver.extra.weight"] = torch.zeros(1)
    with meta_device():
        model = SAM2Base.from_config(EDGETAM)
    with pytest.raises(CheckpointError) as err:
        load_model_weights(model, broken, info=get_model_info("edgetam"), assign=True)
    message = str(err.value)
    assert "spatial_perceiver.latents_2d" in message and "spatial_perceiver.extra.weight" in message
    assert "1 missing keys, 1 unexpected keys" in message


def test_transformers_layout_round_trips(weights):
    family = get_family("edgetam")
    config_json, hf = family.to_transformers(EDGETAM, weights, True)
    assert config_json["model_type"] == "edgetam_video"
    assert "spatial_perceiver.layers.0.cross_attention.k_proj.weight" in hf
    assert "spatial_perceiver.latents_1d" in hf and "memory_attention.layers.0.mlp.up_proj.weight" in hf
    assert any(k.startswith("vision_encoder.backbone.timm_model.") for k in hf)
    assert infer_variant(hf).name == "edgetam"
    config, back = family.from_transformers(config_json, hf)
    assert config.replace(name="edgetam") == EDGETAM
    assert sorted(back) == sorted(weights)
    assert all(torch.equal(back[k], weights[k]) for k in weights)
    image_json, image_hf = family.to_transformers(EDGETAM, weights, False)
    assert image_json["model_type"] == "edgetam" and sorted(image_hf) == sorted(hf)  # a full checkpoint
    assert sorted(family.to_transformers(EDGETAM, hf, True)[1]) == sorted(hf)  # either layout in
    converted = get_model_info("edgetam").convert_state_dict(hf)
    assert all(torch.equal(converted[k], weights[k]) for k in weights)


@pytest.mark.parametrize("video", [True, False], ids=["EdgeTamVideoModel", "EdgeTamModel"])
def test_transformers_folders_load_by_path(tmp_path, weights, video):
    from sam2_fast.predictors.video_predictor import SAM2VideoPredictor
    from sam2_fast.transformers_format import write_transformers_folder

    folder = write_transformers_folder(tmp_path / "hf", get_family("edgetam"), EDGETAM, weights, video=video)
    model = SAM2VideoPredictor.from_pretrained(str(folder), device="cpu")
    assert model.config.perceiver == EDGETAM.perceiver and model.spatial_perceiver is not None
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())


def test_missing_timm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'sam2-fast\[edgetam\]'"):
        SAM2Base.from_config(EDGETAM.replace(image_size=SIZE))


def test_model_provides_the_tracking_interface(video_predictor):
    assert model_refusal(video_predictor, TrackingModel) is None
    assert video_predictor.spatial_perceiver is not None


def test_image_predictor_and_mask_generator_run(video_predictor):
    model = build_sam2_random("edgetam", device="cpu", hydra_overrides_extra=OVERRIDES)
    image = sample_image(SIZE, SIZE)
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(image)
    masks, scores, logits = predictor.predict(point_coords=[[80, 90]], point_labels=[1], multimask_output=True)
    assert masks.shape == (3, SIZE, SIZE) and scores.shape == (3,) and logits.shape == (3, SIZE // 4, SIZE // 4)
    records = SAM2AutomaticMaskGenerator(model, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0).generate(image)
    assert isinstance(records, list)


def test_video_and_stream_predictors_track(video_predictor):
    frames = np.stack([sample_video_frame(i, SIZE, SIZE) for i in range(4)])
    at0 = sample_video_objects(0, SIZE, SIZE)
    state = video_predictor.init_state(frames)
    video_predictor.add_new_points_or_box(state, 0, 1, points=[at0["disc"]], labels=[1])
    video_predictor.add_new_points_or_box(state, 0, 2, points=[at0["square"]], labels=[1])
    seen = {f: m.shape for f, _, m in video_predictor.propagate_in_video(state)}
    assert seen == {f: (2, 1, SIZE, SIZE) for f in range(4)}
    memory = state.objects[0].outputs["non_cond_frame_outputs"][3]["maskmem_features"]
    assert memory.shape == (1, 64, 1, 512)  # the perceiver's latents, not a 16 x 16 map

    stream = SAM2StreamPredictor(video_predictor)
    stream.track(frames[0])
    ids, masks = stream.add_new_prompt(1, points=[at0["disc"]], labels=[1])
    for frame in frames[1:]:
        ids, masks = stream.track(frame)
    assert list(ids) == [1] and masks.shape[-2:] == (SIZE, SIZE)


def test_track_command_runs_with_random_weights(tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(sample_video_frame(i, SIZE, SIZE)).save(folder / f"{i:05d}.jpg")
    x, y = sample_video_objects(0, SIZE, SIZE)["disc"]
    out = tmp_path / "out"
    rc, _, stderr = run_cli(["track", str(folder), "--point", f"0,{x},{y}", "--model", "edgetam", "--random-weights",
                             "--image-size", str(SIZE), "--device", "cpu", "--out", str(out), "--quiet"])
    assert rc == 0, stderr
    assert "RANDOM WEIGHTS" in stderr
    assert len(list((out / "masks").iterdir())) == 3
