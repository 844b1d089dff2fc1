"""The model zoo: built-in variants, every official name form, suggestions, plugins."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sam2_fast.modeling.config import PRESETS
from sam2_fast.zoo import ModelInfo, UnknownModelError, get_model_info, list_models, register

BUILTIN = [
    "sam2-hiera-tiny",
    "sam2-hiera-small",
    "sam2-hiera-base-plus",
    "sam2-hiera-large",
    "sam2.1-hiera-tiny",
    "sam2.1-hiera-small",
    "sam2.1-hiera-base-plus",
    "sam2.1-hiera-large",
]


def _oracle_dir() -> Path:
    spec = importlib.util.find_spec("sam2")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the official sam2 package is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _official_hub_table() -> dict:
    """``HF_MODEL_ID_TO_FILENAMES`` of the official build_sam.py, read without importing it."""
    tree = ast.parse((_oracle_dir() / "build_sam.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "HF_MODEL_ID_TO_FILENAMES"
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("HF_MODEL_ID_TO_FILENAMES not found in the official build_sam.py")


def test_builtin_family_has_the_eight_official_variants() -> None:
    assert list_models()[:8] == BUILTIN
    assert list_models(family="sam2") == BUILTIN
    assert list_models(family="no-such-family") == []
    for name in BUILTIN:
        info = get_model_info(name)
        assert info.family == "sam2" and info.config == PRESETS[name] and info.description


def test_hub_ids_and_file_names_match_official_build_sam() -> None:
    table = _official_hub_table()
    assert len(table) == 8
    for hub_id, (config_name, filename) in table.items():
        info = get_model_info(hub_id)
        assert (info.hub_repo_id, info.filename) == (hub_id, filename)
        assert get_model_info(config_name) is info
        assert info.name == hub_id.split("/")[1]


def test_every_official_config_file_resolves_to_a_matching_preset() -> None:
    root = _oracle_dir()
    files = sorted(root.glob("configs/sam2*/*.yaml")) + sorted(root.glob("*.yaml"))
    files = [f for f in files if "training" not in f.parent.name]
    assert len(files) == 12  # 4 sizes x (configs/sam2, configs/sam2.1, legacy top level)
    yaml = pytest.importorskip("yaml")
    for file in files:
        name = file.relative_to(root).as_posix()
        model = yaml.safe_load(file.read_text())["model"]
        trunk = model["image_encoder"]["trunk"]
        info = get_model_info(name)
        # what the yaml leaves out takes the official Hiera constructor's defaults
        official = (trunk.get("embed_dim", 96), tuple(trunk.get("stages", (2, 3, 16, 3))))
        assert (info.config.trunk.embed_dim, info.config.trunk.stages) == official, name
        assert info.config.no_obj_embed_spatial == model.get("no_obj_embed_spatial", False), name


@pytest.mark.parametrize(
    "alias, expected",
    [
        ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1-hiera-tiny"),
        ("configs/sam2.1/sam2.1_hiera_t", "sam2.1-hiera-tiny"),
        ("sam2.1_hiera_t.yaml", "sam2.1-hiera-tiny"),
        ("configs/sam2/sam2_hiera_s.yaml", "sam2-hiera-small"),
        ("sam2_hiera_s.yaml", "sam2-hiera-small"),  # SAM 2.0 top-level (sam2 1.0) name
        ("sam2.1_hiera_b+.yaml", "sam2.1-hiera-base-plus"),
        ("configs/sam2/sam2_hiera_b+.yaml", "sam2-hiera-base-plus"),
        ("sam2_hiera_l.yaml", "sam2-hiera-large"),
        ("facebook/sam2.1-hiera-large", "sam2.1-hiera-large"),
        ("sam2.1_hiera_base_plus", "sam2.1-hiera-base-plus"),  # checkpoint file stem
        ("  SAM2.1-Hiera-Tiny ", "sam2.1-hiera-tiny"),
    ],
)
def test_aliases_resolve(alias: str, expected: str) -> None:
    assert get_model_info(alias).name == expected


def test_unknown_name_suggests_close_names_and_lists_known_ones() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_model_info("sam2.1-hiera-tiyn")
    assert isinstance(err.value, ValueError)
    assert err.value.suggestions[0] == "sam2.1-hiera-tiny"
    message = str(err.value)
    assert "Did you mean 'sam2.1-hiera-tiny'" in message
    assert all(name in message for name in BUILTIN)


def test_suggestions_name_each_model_once() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_model_info("configs/sam2.1/sam2.1_hiera_x.yaml")
    suggested = [get_model_info(s).name for s in err.value.suggestions]
    assert err.value.suggestions[0].startswith("configs/sam2.1/")
    assert len(suggested) == len(set(suggested))


def test_unrelated_name_has_no_suggestion_but_lists_known_models() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_model_info("resnet50")
    assert err.value.suggestions == []
    assert "Did you mean" not in str(err.value) and "sam2.1-hiera-large" in str(err.value)


def test_register_refuses_a_name_or_alias_of_another_model() -> None:
    taken_alias = ModelInfo(
        name="acme-tiny",
        family="acme",
        config=PRESETS["sam2.1-hiera-tiny"],
        aliases=("facebook/sam2.1-hiera-tiny",),
    )
    with pytest.raises(ValueError, match="already names model 'sam2.1-hiera-tiny'"):
        register(taken_alias)
    with pytest.raises(ValueError, match="already registered"):
        register(get_model_info("sam2-hiera-tiny"))
    assert "acme-tiny" not in list_models()


def test_model_info_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="both hub_repo_id and filename"):
        ModelInfo(name="x", family="f", config=PRESETS["sam2.1-hiera-tiny"], hub_repo_id="a/b")
    with pytest.raises(TypeError, match="config is required"):
        ModelInfo(name="x", family="f", config=None)
    # registering checks the config against the family (the family may register first)
    with pytest.raises(TypeError, match=r"config must be a SAM2Config \(family 'sam2'\), got dict"):
        register(ModelInfo(name="x", family="sam2", config={"embed_dim": 96}))
    with pytest.raises(TypeError, match="config must be a SAM2Config"):
        register(ModelInfo(name="x", family="f", config={"embed_dim": 96}))
    assert "x" not in list_models()


def test_hub_filenames_put_official_keys_first_and_transformers_last() -> None:
    info = get_model_info("sam2.1-hiera-tiny")
    assert info.hub_filenames == (
        "sam2.1_hiera_tiny.safetensors",
        "sam2.1_hiera_tiny.pt",
        "model.safetensors",
    )


def _run_python(code: str, pythonpath: Path | None = None) -> dict:
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": str(pythonpath)}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(__file__).parent,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_zoo_lookups_do_not_import_torch() -> None:
    probe = _run_python("""
        import json, sys
        from sam2_fast.zoo import get_model_info, list_models
        list_models(); get_model_info("configs/sam2.1/sam2.1_hiera_l.yaml")
        print(json.dumps({"torch": "torch" in sys.modules}))
        """)
    assert probe == {"torch": False}


def _install_plugin(site: Path, dist: str, entry_points: str, modules: dict) -> None:
    """What ``pip install`` leaves for a plugin: its modules and a dist-info with entry points."""
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


_PROBE_PLUGINS = """
    import json, sys, warnings
    import sam2_fast.zoo as zoo
    loaded_at_import = sorted(m for m in ("acme_zoo", "beta_zoo", "broken_zoo") if m in sys.modules)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = zoo.list_models()
    acme = zoo.get_model_info("acme/sam2-tiny-med")
    print(json.dumps({
        "loaded_at_import": loaded_at_import,
        "names": names,
        "acme": [acme.name, acme.family, acme.filename, acme.config.name],
        "beta": zoo.get_model_info("beta-large").family,
        "warnings": [str(w.message) for w in caught],
    }))
"""


def test_entry_point_plugins_register_lazily_and_a_broken_one_only_warns(tmp_path: Path) -> None:
    _install_plugin(
        tmp_path,
        "acme_zoo",
        """
        [sam2_fast.zoo]
        acme = acme_zoo
        """,
        {
            "acme_zoo": """
                from sam2_fast.modeling.config import PRESETS
                from sam2_fast.zoo import ModelInfo, register

                register(ModelInfo(
                    name="acme-sam2-tiny-med", family="acme", config=PRESETS["sam2.1-hiera-tiny"],
                    hub_repo_id="acme/sam2-tiny-med", filename="tiny_med.pt",
                    aliases=("acme/sam2-tiny-med",), description="fine-tuned on medical images",
                ))
            """,
        },
    )
    _install_plugin(
        tmp_path,
        "beta_zoo",
        """
        [sam2_fast.zoo]
        beta = beta_zoo:variants
        broken = broken_zoo:register_models
        """,
        {
            "beta_zoo": """
                from sam2_fast.modeling.config import PRESETS
                from sam2_fast.zoo import ModelInfo

                def variants():
                    large = PRESETS["sam2-hiera-large"]
                    return [ModelInfo(name="beta-large", family="beta", config=large)]
            """,
            "broken_zoo": """
                raise ImportError("this plugin needs a package that is not installed")
            """,
        },
    )
    probe = _run_python(_PROBE_PLUGINS, pythonpath=tmp_path)
    assert probe["loaded_at_import"] == []
    assert probe["names"][:9] == [*BUILTIN, "edgetam"]  # the built-in families' variants first
    assert set(probe["names"][9:]) == {"acme-sam2-tiny-med", "beta-large"}
    assert probe["acme"] == ["acme-sam2-tiny-med", "acme", "tiny_med.pt", "sam2.1-hiera-tiny"]
    assert probe["beta"] == "beta"
    assert len(probe["warnings"]) == 1
    warning = probe["warnings"][0]
    assert "broken = broken_zoo:register_models" in warning and "beta_zoo 1.0" in warning
    assert "this plugin needs a package that is not installed" in warning


_FAMILY_PLUGIN = """
    from dataclasses import dataclass, replace

    from sam2_fast.modeling.config import PRESETS, SAM2Config
    from sam2_fast.zoo import Family, ModelInfo


    @dataclass(frozen=True)
    class TinyNetConfig:
        # a family's own config type: not a SAM2Config
        base: SAM2Config
        memory_frames: int


    def build(config):
        from sam2_fast.modeling.sam2_base import SAM2Base

        model = SAM2Base.from_config(replace(config.base, num_maskmem=config.memory_frames))
        model.built_by = "tinynet"
        return model


    def fingerprint(state_dict):
        # this family's checkpoints name their width in a key of their own
        marker = state_dict.get("tinynet.width")
        return None if marker is None else int(marker.shape[0])


    def from_transformers(config_json, state_dict):
        # its transformers folders: config.json names the memory size, keys carry a prefix
        config = TinyNetConfig(PRESETS["sam2.1-hiera-tiny"], memory_frames=config_json["memory_frames"])
        return config, {k[len("tinynet."):]: v for k, v in state_dict.items()}


    def models():
        config = TinyNetConfig(PRESETS["sam2.1-hiera-tiny"], memory_frames=3)
        return [
            Family(name="tinynet", config_type=TinyNetConfig, build=build, fingerprint=fingerprint,
                   config_fingerprint=lambda c: c.base.trunk.embed_dim,
                   describe=lambda width: f"tinynet of width {width}",
                   transformers_model_types=("tinynet",), from_transformers=from_transformers),
            ModelInfo(name="tinynet-3", family="tinynet", config=config),
        ]
"""

_PROBE_FAMILY = """
    import json
    import numpy as np
    import torch
    from sam2_fast import SAM2ImagePredictor, build_sam2
    from sam2_fast.checkpoint import infer_variant
    from sam2_fast.errors import InvalidTypeError
    from sam2_fast.modeling.config import PRESETS
    from sam2_fast.zoo import ModelInfo, list_families, list_models, register

    model = build_sam2("tinynet-3", device="cpu")
    predictor = SAM2ImagePredictor(model)
    predictor.set_image(np.zeros((64, 80, 3), np.uint8))
    masks, scores, _ = predictor.predict(point_coords=np.array([[10.0, 20.0]]), point_labels=np.array([1]))
    sd = {"tinynet.width": torch.zeros(96)}
    try:  # a variant of the family must carry the family's config type
        register(ModelInfo(name="tinynet-bad", family="tinynet", config=PRESETS["sam2.1-hiera-tiny"]))
        refused = ""
    except InvalidTypeError as exc:
        refused = str(exc)
    import os, pathlib
    from safetensors.torch import save_file
    from sam2_fast.transformers_format import read_transformers_folder
    from sam2_fast.zoo import get_family_for_transformers

    folder = pathlib.Path(os.environ["PYTHONPATH"]) / "tinynet-hf"  # the test's tmp_path
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "tinynet", "memory_frames": 3}))
    save_file({f"tinynet.{k}": v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    family, config, read = read_transformers_folder(folder)
    print(json.dumps({
        "transformers_family": [get_family_for_transformers("tinynet").name, family.name],
        "transformers_config": config.memory_frames,
        "transformers_same": all(torch.equal(read[k], v) for k, v in model.state_dict().items()),
        "families": list_families(),
        "built_by": getattr(model, "built_by", None),
        "num_maskmem": model.num_maskmem,
        "masks": list(masks.shape),
        "inferred": infer_variant(sd).name,
        "plain": infer_variant(model.state_dict()).name,
        "refused": refused,
        "in_list": "tinynet-3" in list_models(),
        "bad_in_list": "tinynet-bad" in list_models(),
    }))
"""


def test_a_third_party_family_registers_through_an_entry_point_and_builds(tmp_path: Path) -> None:
    """A plugin family with its own config type: the factory builds it with the family's
    builder, the image predictor runs on it, and checkpoints are recognised by its fingerprint."""
    _install_plugin(tmp_path, "tinynet_zoo", """
        [sam2_fast.zoo]
        tinynet = tinynet_zoo:models
        """, {"tinynet_zoo": _FAMILY_PLUGIN})
    probe = _run_python(_PROBE_FAMILY, pythonpath=tmp_path)
    assert probe["families"][0] == "sam2" and probe["families"][-1] == "tinynet"  # after the built-in ones
    assert probe["built_by"] == "tinynet" and probe["num_maskmem"] == 3
    assert probe["masks"] == [3, 64, 80]
    assert probe["inferred"] == "tinynet-3"  # recognised by the plugin family's fingerprint
    assert probe["plain"] == "sam2.1-hiera-tiny"  # without it: the built-in family's
    assert "config must be a TinyNetConfig (family 'tinynet')" in probe["refused"]
    assert probe["in_list"] and not probe["bad_in_list"]
    # its transformers folders are read through the seam: model_type -> family -> config, keys
    assert probe["transformers_family"] == ["tinynet", "tinynet"]
    assert probe["transformers_config"] == 3 and probe["transformers_same"]
