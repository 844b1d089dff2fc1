"""transformers-format folders (config.json + model.safetensors): written and read without
transformers, both ways, picked by the loaders, converted by ``sam2-fast convert``; refused
with the readable key diff when they do not fit. Parity with transformers' own models is
``tests/parity/test_transformers_sam2.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sam2_fast.checkpoint import read_state_dict
from sam2_fast.cli import main
from sam2_fast.errors import CheckpointError, InvalidInputError, InvalidTypeError
from sam2_fast.factory import read_weights
from sam2_fast.modeling.config import PRESETS
from sam2_fast.transformers_format import (
    is_transformers_folder,
    read_transformers_folder,
    write_transformers_folder,
)
from sam2_fast.zoo import Family, get_family, get_family_for_transformers
from sam2_fast.zoo.sam2 import config_from_transformers, config_to_transformers

TINY = "sam2.1-hiera-tiny"


def assert_identical(read: dict, expected: dict) -> None:
    assert set(read) == set(expected)
    assert all(torch.equal(read[k], v) for k, v in expected.items())


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, tiny_state_dict) -> Path:
    out = tmp_path_factory.mktemp("hf") / "sam2.1-hiera-tiny-hf"
    config = PRESETS[TINY]
    return write_transformers_folder(out, get_family(config), config, tiny_state_dict, video=True)


@pytest.mark.parametrize("video", [False, True], ids=["Sam2Model", "Sam2VideoModel"])
def test_a_written_folder_reads_back_as_the_identical_state_dict(tmp_path, tiny_state_dict, video):
    config = PRESETS[TINY]
    out = write_transformers_folder(tmp_path / "out", get_family(config), config, tiny_state_dict, video=video)
    assert is_transformers_folder(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["model_type"] == ("sam2_video" if video else "sam2")
    assert config_json["architectures"] == ["Sam2VideoModel" if video else "Sam2Model"]
    keys = read_state_dict(out / "model.safetensors")
    assert "vision_encoder.backbone.patch_embed.projection.weight" in keys  # transformers' names
    family, read_config, state_dict = read_transformers_folder(out)
    assert family.name == "sam2" and read_config == config
    assert_identical(state_dict, tiny_state_dict)


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("video", [False, True], ids=["image", "video"])
def test_every_variant_config_survives_config_json(name, video):
    config = PRESETS[name]
    # an image-model config.json says nothing about the memory: the release comes from the weights
    weights = {"occlusion_spatial_embedding_parameter": None} if config.no_obj_embed_spatial else {}
    assert config_from_transformers(config_to_transformers(config, video), weights) == config


def test_a_smaller_image_size_is_kept(tmp_path, tiny_state_dict):
    config = PRESETS[TINY].replace(image_size=512)
    write_transformers_folder(tmp_path, get_family(config), config, tiny_state_dict, video=True)
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["vision_config"]["backbone_feature_sizes"] == [[128, 128], [64, 64], [32, 32]]
    assert config_json["memory_attention_rope_feat_sizes"] == [32, 32]
    assert read_transformers_folder(tmp_path)[1] == config


def test_sharded_weights_are_read_through_the_index(tmp_path, tiny_folder, tiny_state_dict):
    weights = read_state_dict(tiny_folder / "model.safetensors")
    keys = sorted(weights)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for shard, names in shards.items():
        save_file({k: weights[k] for k in names}, str(tmp_path / shard), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: s for s, names in shards.items() for k in names}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((tiny_folder / "config.json").read_text())
    assert is_transformers_folder(tmp_path)
    assert_identical(read_transformers_folder(tmp_path)[2], tiny_state_dict)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="not found"):
        read_transformers_folder(tmp_path)


def test_an_unknown_key_fails_with_the_readable_key_diff(tmp_path, tiny_folder):
    weights = read_state_dict(tiny_folder / "model.safetensors")
    weights["mask_decoder.extra_head.weight"] = torch.zeros(3)
    del weights["vision_encoder.neck.convs.0.weight"]
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((tiny_folder / "config.json").read_text())
    with pytest.raises(CheckpointError) as err:
        read_transformers_folder(tmp_path)
    message = str(err.value)
    assert "1 missing keys, 1 unexpected keys" in message
    assert "image_encoder.neck.convs.0.conv.weight" in message  # missing, by its official name
    assert "mask_decoder.extra_head.weight" in message  # unexpected, as stored
    assert "looks like 'sam2.1-hiera-tiny'" in message


def test_an_unknown_model_type_names_the_known_ones(tmp_path, tiny_folder):
    (tmp_path / "model.safetensors").write_bytes((tiny_folder / "model.safetensors").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam3_video"}))
    with pytest.raises(CheckpointError, match=r"model_type 'sam3_video'.*known types: .*sam2, sam2_video"):
        read_transformers_folder(tmp_path)


def test_pickled_transformers_weights_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "sam2_video"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    assert not is_transformers_folder(tmp_path)
    from sam2_fast.transformers_format import read_transformers_weights

    with pytest.raises(CheckpointError, match="pytorch_model.bin, which sam2-fast does not read"):
        read_transformers_weights(tmp_path)


def test_get_family_for_transformers_and_the_family_fields():
    assert get_family_for_transformers("sam2").name == "sam2"
    assert get_family_for_transformers("sam2_video").name == "sam2"
    with pytest.raises(InvalidInputError, match="model_type 'bert'"):
        get_family_for_transformers("bert")
    sam2 = get_family("sam2")
    fields = dict(
        name="x", config_type=dict, build=dict, fingerprint=dict, config_fingerprint=dict,
    )
    with pytest.raises(InvalidInputError, match="needs from_transformers"):
        Family(**fields, transformers_model_types=("x",))
    with pytest.raises(InvalidTypeError, match="tuple of strings"):
        Family(**fields, transformers_model_types="x", from_transformers=sam2.from_transformers)
    assert Family(**fields).to_transformers is None


# --------------------------------------------------------------------------------------------
# loading: the format a folder holds


def test_read_weights_picks_the_format_a_folder_holds(tmp_path, tiny_folder, tiny_pt_file, tiny_state_dict):
    state_dict, config = read_weights(tiny_folder)
    assert config == PRESETS[TINY]
    assert_identical(state_dict, tiny_state_dict)
    # a Hub snapshot with both: the official file first
    both = tmp_path / "both"
    both.mkdir()
    for p in tiny_folder.iterdir():
        (both / p.name).symlink_to(p)
    (both / tiny_pt_file.name).symlink_to(tiny_pt_file)
    state_dict, config = read_weights(both)
    assert config is None and set(state_dict) == set(tiny_state_dict)
    (both / "copy.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="several checkpoints"):
        read_weights(both)


def test_predictors_and_build_sam2_hf_load_a_transformers_folder(tiny_folder, tiny_state_dict):
    from sam2_fast import SAM2ImagePredictor, SAM2VideoPredictor, build_sam2, build_sam2_hf

    for model in (
        build_sam2_hf(str(tiny_folder), device="cpu"),
        SAM2ImagePredictor.from_pretrained(str(tiny_folder), device="cpu").model,
        SAM2VideoPredictor.from_pretrained(str(tiny_folder), device="cpu"),
        build_sam2(TINY, ckpt_path=str(tiny_folder), device="cpu"),
    ):
        own = model.state_dict()
        for key in ("image_encoder.trunk.patch_embed.proj.weight", "sam_prompt_encoder.point_embeddings.3.weight"):
            assert torch.equal(own[key], tiny_state_dict[key]), key


# --------------------------------------------------------------------------------------------
# sam2-fast convert


def test_cli_converts_to_transformers_and_back(tmp_path, tiny_pt_file, tiny_state_dict, capsys):
    out = tmp_path / "tiny-hf"
    assert main(["convert", str(tiny_pt_file), "--to", "transformers", str(out), "--video"]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "sam2_video"
    assert main(["convert", str(out), "--to", "official", str(tmp_path / "back.pt")]) == 0
    assert_identical(read_state_dict(tmp_path / "back.pt"), tiny_state_dict)
    assert main(["convert", str(out), "--to", "safetensors"]) == 0
    assert_identical(read_state_dict(tmp_path / "tiny-hf.safetensors"), tiny_state_dict)
    image = tmp_path / "tiny-image-hf"
    assert main(["convert", str(tmp_path / "back.pt"), "--to", "transformers", str(image)]) == 0
    assert json.loads((image / "config.json").read_text())["model_type"] == "sam2"
    assert "wrote" in capsys.readouterr().out


def test_cli_convert_refuses_mismatched_arguments(tmp_path, tiny_pt_file, capsys):
    assert main(["convert", str(tiny_pt_file), "--to", "transformers"]) == 2
    assert "needs the output folder" in capsys.readouterr().err
    assert main(["convert", str(tiny_pt_file), str(tmp_path / "x.safetensors"), "--to", "official"]) == 2
    assert "--to official writes a .pt file" in capsys.readouterr().err
    assert main(["convert", str(tiny_pt_file), str(tmp_path / "x.safetensors"), "--video"]) == 2
    assert "--video and --model: only with --to transformers" in capsys.readouterr().err
