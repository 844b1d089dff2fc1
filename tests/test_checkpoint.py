"""Checkpoint reading, strict loading with readable diffs, layouts and conversion."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sam2_fast.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    convert_checkpoint,
    group_keys,
    infer_variant,
    load_model_weights,
    read_state_dict,
)
from sam2_fast.modeling.config import PRESETS
from sam2_fast.modeling.sam2_base import SAM2Base
from sam2_fast.zoo import get_model_info, list_models
from sam2_fast.zoo.sam2 import detect_layout, to_transformers_key, to_transformers_state_dict

TINY = "sam2.1-hiera-tiny"


def meta_model(name: str = TINY) -> SAM2Base:
    with torch.device("meta"):
        return SAM2Base.from_config(PRESETS[name])


def meta_state_dict(name: str) -> dict:
    """Shape-only weights of a variant (enough for key and shape checks)."""
    return meta_model(name).state_dict()


def assert_same_weights(model: torch.nn.Module, expected: dict) -> None:
    actual = model.state_dict()
    assert list(actual) == list(expected)
    for key, tensor in expected.items():
        assert actual[key].device.type == "cpu", key
        assert torch.equal(actual[key], tensor), key


class TrainingState:
    """A non-tensor object of the kind training scripts pickle next to the weights."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch


# --------------------------------------------------------------------------------------------
# reading and loading


def test_official_pt_loads_into_a_meta_model_with_assign(
    tiny_pt_file: Path, tiny_state_dict: dict
) -> None:
    state_dict = read_state_dict(tiny_pt_file)
    model = load_model_weights(meta_model(), state_dict, assign=True)
    assert_same_weights(model, tiny_state_dict)


def test_safetensors_loads_into_a_cpu_model(
    tiny_safetensors_file: Path, tiny_state_dict: dict
) -> None:
    model = SAM2Base.from_config(PRESETS[TINY])
    load_model_weights(model, read_state_dict(tiny_safetensors_file), info=get_model_info(TINY))
    assert_same_weights(model, tiny_state_dict)


def test_bare_state_dict_and_legacy_format_are_read(tmp_path: Path) -> None:
    weights = {"a.weight": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16)}
    bare, legacy = tmp_path / "bare.pt", tmp_path / "legacy.pth"
    torch.save(weights, bare)
    torch.save({"model": weights, "epoch": 3}, legacy, _use_new_zipfile_serialization=False)
    for path in (bare, legacy):
        read = read_state_dict(path)
        assert list(read) == list(weights) and all(
            torch.equal(read[k], weights[k]) for k in weights
        )


def test_format_comes_from_the_content_not_the_extension(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    save_file({"x": torch.zeros(3)}, str(path))
    assert torch.equal(read_state_dict(path)["x"], torch.zeros(3))


@pytest.mark.parametrize("name", list(get_model_info(n).name for n in list_models(family="sam2")))
def test_infer_variant_recognises_each_official_variant_in_both_layouts(name: str) -> None:
    state_dict = meta_state_dict(name)
    assert infer_variant(state_dict).name == name
    assert infer_variant(to_transformers_state_dict(state_dict)).name == name


def test_infer_variant_returns_none_for_other_weights() -> None:
    assert infer_variant({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}) is None


# --------------------------------------------------------------------------------------------
# strict loading: readable diffs


def test_other_variant_gives_missing_unexpected_and_looks_like_hint() -> None:
    with pytest.raises(CheckpointError) as err:
        load_model_weights(meta_model(TINY), meta_state_dict("sam2-hiera-small"), source="small.pt")
    message = str(err.value)
    assert message.startswith(
        "the checkpoint 'small.pt' does not fit the model (sam2.1-hiera-tiny)"
    )
    missing = message.split("missing keys (")[1].split("unexpected keys (")[0]
    assert "no_obj_embed_spatial" in missing and "obj_ptr_tpos_proj.weight" in missing
    unexpected = message.split("unexpected keys (")[1].split("shape mismatches:")[0]
    assert "image_encoder.trunk.blocks.12-15.* (50 keys)" in unexpected
    assert "looks like 'sam2-hiera-small'" in message and "build_sam2('sam2-hiera-small'" in message
    assert "16 trunk blocks" in message


def test_wider_variant_gives_shape_mismatches() -> None:
    with pytest.raises(CheckpointError) as err:
        load_model_weights(meta_model(TINY), meta_state_dict("sam2.1-hiera-base-plus"))
    message = str(err.value)
    assert (
        "image_encoder.trunk.patch_embed.proj.weight: "
        "checkpoint [112, 3, 7, 7] vs model [96, 3, 7, 7]" in message
    )
    assert "... and" in message  # truncated: far more mismatches than lines
    assert len(message.splitlines()) < 60
    assert "looks like 'sam2.1-hiera-base-plus'" in message


def test_incomplete_checkpoint_of_the_same_variant_says_so(tiny_state_dict: dict) -> None:
    partial = {
        k: v for k, v in tiny_state_dict.items() if not k.startswith("memory_attention.layers.3.")
    }
    with pytest.raises(CheckpointError) as err:
        load_model_weights(meta_model(TINY), partial)
    message = str(err.value)
    assert "memory_attention.layers.3.* (26 keys)" in message
    assert "the model's own variant" in message and "incomplete" in message


def test_foreign_checkpoint_hint_says_it_is_not_sam2() -> None:
    with pytest.raises(CheckpointError, match="no SAM 2 image-encoder weights"):
        load_model_weights(meta_model(TINY), {"backbone.conv1.weight": torch.zeros(1)})


def test_group_keys_groups_by_first_index_and_truncates() -> None:
    keys = [f"blocks.{i}.{p}" for i in range(12, 16) for p in ("a.weight", "a.bias", "b.weight")]
    assert group_keys(keys + ["norm.weight", "layers.2.x"]) == [
        "blocks.12-15.* (12 keys)",
        "layers.2.x",
        "norm.weight",
    ]
    many = [f"head{i}.w" for i in range(30)]
    assert group_keys(many, max_lines=5)[-1] == "... and 25 more groups"


def test_load_rejects_non_tensor_values() -> None:
    with pytest.raises(TypeError, match="not tensors"):
        load_model_weights(meta_model(TINY), {"a": 1})  # type: ignore[dict-item]


# --------------------------------------------------------------------------------------------
# transformers layout


def test_transformers_key_mapping_is_one_to_one_for_every_variant() -> None:
    for name in list_models(family="sam2"):
        keys = list(meta_state_dict(name))
        assert len({to_transformers_key(k) for k in keys}) == len(keys), name


def test_transformers_names_match_the_conversion_script() -> None:
    hf = to_transformers_state_dict(meta_state_dict(TINY))
    for key in (
        "vision_encoder.backbone.patch_embed.projection.weight",
        "vision_encoder.backbone.blocks.0.mlp.proj_in.weight",
        "vision_encoder.neck.convs.0.weight",
        "mask_decoder.iou_prediction_head.layers.0.weight",
        "mask_decoder.transformer.layers.0.mlp.proj_out.weight",
        "memory_encoder.mask_downsampler.final_conv.weight",
        "memory_encoder.memory_fuser.layers.0.scale",
        "memory_encoder.projection.weight",
        "object_pointer_proj.proj_out.weight",
        "occlusion_spatial_embedding_parameter",
        "memory_temporal_positional_encoding",
        "shared_image_embedding.positional_embedding",
    ):
        assert key in hf, key
    assert hf["prompt_encoder.point_embed.weight"].shape == (4, 256)
    assert detect_layout(hf) == "transformers"


def test_transformers_layout_file_loads_back_equal(tmp_path: Path, tiny_state_dict: dict) -> None:
    path = tmp_path / "model.safetensors"
    save_file(to_transformers_state_dict(tiny_state_dict), str(path))
    state_dict = read_state_dict(path)
    assert detect_layout(state_dict) == "transformers"
    model = load_model_weights(meta_model(TINY), state_dict, assign=True)
    assert_same_weights(model, tiny_state_dict)


def test_transformers_layout_with_the_tied_copy_only(tiny_state_dict: dict) -> None:
    hf = to_transformers_state_dict(tiny_state_dict)
    del hf[to_transformers_key("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")]
    model = load_model_weights(meta_model(TINY), hf, assign=True)
    assert_same_weights(model, tiny_state_dict)


# --------------------------------------------------------------------------------------------
# bad files


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_missing_file_names_the_path_and_suggests_a_fix(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        read_state_dict(tmp_path / "nope.pt")
    assert str(tmp_path / "nope.pt") in str(err.value) and "sam2.1-hiera-tiny" in str(err.value)


def test_directory_lists_the_checkpoints_inside(tmp_path: Path) -> None:
    (tmp_path / "sam2.1_hiera_tiny.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"is a directory.*sam2\.1_hiera_tiny\.pt"):
        read_state_dict(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        read_state_dict(_write(tmp_path / "a.pt", b""))


def test_truncated_pt(tmp_path: Path) -> None:
    full = tmp_path / "full.pt"
    torch.save({"model": {"w": torch.randn(1000)}}, full)
    data = full.read_bytes()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(_write(tmp_path / "cut.pt", data[: len(data) // 2]))


def test_truncated_safetensors(tmp_path: Path) -> None:
    full = tmp_path / "full.safetensors"
    save_file({"w": torch.randn(1000)}, str(full))
    data = full.read_bytes()
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(_write(tmp_path / "cut.safetensors", data[:-100]))
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(_write(tmp_path / "header.safetensors", data[:20]))


@pytest.mark.parametrize(
    "content, what",
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "a PNG image"),
        (b"model:\n  image_encoder:\n    trunk: {}\n", "a text file (starting 'model:')"),
        (b"<!DOCTYPE html><html><body>Not found</body></html>", "an HTML page"),
        (
            b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 155\n",
            "a Git LFS pointer",
        ),
        (bytes(range(1, 60)), "unrecognised binary data"),
    ],
)
def test_not_a_checkpoint_says_what_the_file_is(tmp_path: Path, content: bytes, what: str) -> None:
    with pytest.raises(CheckpointError) as err:
        read_state_dict(_write(tmp_path / "weights.pt", content))
    assert "is not a checkpoint" in str(err.value) and what in str(err.value)


def test_pickle_needing_full_unpickling_is_refused_with_a_safe_way_out(tmp_path: Path) -> None:
    path = tmp_path / "trained.pt"
    torch.save(
        {
            "model": {"w": torch.ones(2)},
            "state": TrainingState(3),
            "args": argparse.Namespace(lr=1),
        },
        path,
    )
    with pytest.raises(UnsafeCheckpointError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert "TrainingState" in message and "argparse.Namespace" in message
    assert "arbitrary code" in message and f"sam2-fast convert --trust-pickle {path}" in message
    assert "weights_only=False" not in message
    assert (
        err.value.__cause__ is None and err.value.__suppress_context__
    )  # torch's advice is not chained
    with pytest.raises(UnsafeCheckpointError):
        convert_checkpoint(path, tmp_path / "out.safetensors")
    out = convert_checkpoint(path, tmp_path / "out.safetensors", trust_pickle=True)
    assert torch.equal(read_state_dict(out)["w"], torch.ones(2))


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"epoch": 3, "name": "run"}, r"not a state dict of tensors \(keys: 'epoch', 'name'\)"),
        ({"state_dict": {"w": torch.ones(1)}, "epoch": 3}, "tensors seem to be under 'state_dict'"),
        (
            {"model": {"w": torch.ones(1), "step": 5}},
            r"\['model'\] is not a state dict.*not tensors: 'step'",
        ),
        ([torch.ones(1)], "holds a list, not a state dict"),
    ],
)
def test_file_without_a_state_dict(tmp_path: Path, obj: object, match: str) -> None:
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(path)


def test_safetensors_without_tensors(tmp_path: Path) -> None:
    path = tmp_path / "empty.safetensors"
    save_file({}, str(path))
    with pytest.raises(CheckpointError, match="without any tensors"):
        read_state_dict(path)


# --------------------------------------------------------------------------------------------
# conversion


def test_convert_pt_to_safetensors_and_back(
    tmp_path: Path, tiny_pt_file: Path, tiny_state_dict: dict
) -> None:
    st = convert_checkpoint(tiny_pt_file, tmp_path / "tiny.safetensors")
    assert st == tmp_path / "tiny.safetensors"
    with safe_open(str(st), "pt") as f:
        assert f.metadata() == {"format": "pt", "layout": "official", "variant": TINY}
    pt = convert_checkpoint(st)
    assert pt == tmp_path / "tiny.pt"
    raw = torch.load(pt, map_location="cpu", weights_only=True)
    assert list(raw) == ["model"]
    model = load_model_weights(meta_model(TINY), read_state_dict(pt), assign=True)
    assert_same_weights(model, tiny_state_dict)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "tiny.pt",
        "tiny.safetensors",
    ]  # no temp files left


def test_convert_writes_official_keys_from_a_transformers_file(
    tmp_path: Path, tiny_state_dict: dict
) -> None:
    src = tmp_path / "model.safetensors"
    save_file(to_transformers_state_dict(tiny_state_dict), str(src))
    out = read_state_dict(convert_checkpoint(src, tmp_path / "official.pt"))
    assert sorted(out) == sorted(tiny_state_dict)
    assert all(torch.equal(out[k], v) for k, v in tiny_state_dict.items())


def test_convert_needs_a_known_output_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.safetensors or \.pt"):
        convert_checkpoint(tmp_path / "a.pt", tmp_path / "a.onnx")


def test_loading_a_checkpoint_imports_neither_dynamo_nor_sympy(tiny_pt_file: Path) -> None:
    """Cold start: building on the meta device must not run torch's Python decompositions
    (random init, scalar arithmetic), which import torch._dynamo and sympy (≈1.5 s)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from sam2_fast import build_sam2\n"
        f"build_sam2('sam2.1-hiera-tiny', {str(tiny_pt_file)!r}, device='cpu')\n"
        "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))\n"
    )
    # cwd: not the repository root, whose source tree would shadow the installed package
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tiny_pt_file.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
