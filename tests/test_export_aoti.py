"""AOTInductor export (sam2_fast.export.export_aoti, ``sam2-fast export aoti``): the four
``.pt2`` packages load without sam2_fast (no custom op of ours inside), hold the contract of
the ONNX files, and give what our float32 predictors give: the image encoder and decoder for
points, a box, a mask prompt and a batch of padded prompts (dynamic B and N); the memory
graphs for any number of memories and pointers; AotiVideoTracker on a generated clip, as our
SAM2VideoPredictor; the C++ example (examples/aoti_image_encoder) built with CMake against the
installed torch, as our image predictor. bf16 (autocast) packages stay close to float32.

Tolerances: float32 packages as the ONNX tests (tests/export_support.py); bf16 ones against
float32: logits rel-L2 <= 5e-2, masks >= 98 % equal, IoU within 2e-2 (bf16 keeps 8 bits of
mantissa: the encoder's features differ from float32 by ~1 %, measured, and the decoder adds
its own rounding).

The model is sam2.1-hiera-tiny with random weights at image size 256 (compiling does not
depend much on the size, running does; the graphs are size-generic)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import export_support as es
from cli_support import run_cli
from sam2_fast import SAM2ImagePredictor
from sam2_fast.errors import InvalidInputError, InvalidTypeError
from sam2_fast.export import AotiVideoTracker, export_aoti
from sam2_fast.export.aoti import DTYPES, PARTS, open_package
from sam2_fast.export.onnx_video import MemoryAttentionGraph, MemoryEncoderGraph

if not hasattr(torch._inductor, "aoti_compile_and_package"):
    pytest.skip(f"AOTInductor packages need torch >= 2.6 (this is {torch.__version__})", allow_module_level=True)

MODEL = "sam2.1-hiera-tiny"
SIZE = 256
NUM_FRAMES = 6
MEAN_IOU = 0.99
BF16 = dict(logits_rel_l2=5e-2, masks_equal=0.98, iou_atol=2e-2)
EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "aoti_image_encoder")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tracking model (export_support.tracking_model), its four float32 packages, and our
    image predictor on it with one image set."""
    model = es.tracking_model(MODEL, SIZE)
    out = tmp_path_factory.mktemp("aoti")
    paths = export_aoti(model, out, variant=MODEL)
    predictor = SAM2ImagePredictor(model)
    image = es.test_image(SIZE)
    predictor.set_image(image)
    runtime = es.ImageRuntime(open_package(out, "image_encoder"), open_package(out, "prompt_decoder"), SIZE)
    runtime.set_image(predictor._transforms.to_input(image).numpy()[None])
    return model, out, paths, predictor, runtime


def test_writes_the_packages_and_their_description(exported):
    model, out, paths, _, _ = exported
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{p}.pt2" for p in PARTS] + ["export.json"])
    assert set(paths) == {*PARTS, "export.json"}
    desc = json.loads((out / "export.json").read_text())
    assert desc["format"] == "sam2-fast aoti" and desc["device"] == "cpu" and desc["dtype"] == "fp32"
    assert desc["model"]["image_size"] == SIZE and desc["model"]["variant"] == MODEL
    assert list(desc["files"]) == [f"{p}.pt2" for p in PARTS]
    assert [t["name"] for t in desc["files"]["prompt_decoder.pt2"]["inputs"]] == [
        "image_embed", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels",
        "mask_input", "has_mask_input"]
    assert desc["video"]["num_maskmem"] == model.num_maskmem


def test_packages_run_without_sam2_fast(exported):
    """Loaded by torch alone in a fresh interpreter: no custom op of sam2_fast in the graphs,
    and the metadata a C++ program reads."""
    _, out, _, _, _ = exported
    code = f"""
import json, sys, torch
desc = json.load(open({str(out / 'export.json')!r}))
for name, spec in desc["files"].items():
    package = torch._inductor.aoti_load_package({str(out)!r} + "/" + name)
    meta = package.get_metadata()
    assert meta["part"] + ".pt2" == name and meta["image_size"] == "{SIZE}", meta
    assert meta["mean"] == "0.485,0.456,0.406" and meta["std"] == "0.229,0.224,0.225", meta
    sizes = {{"B": 2, "N": 3, "T": 2, "P": 3}}
    args = []
    for t in spec["inputs"]:
        shape = [sizes.get(d, d) for d in t["shape"]]
        args.append(torch.zeros(shape, dtype=torch.int64) if t["dtype"] == "int64" else torch.rand(shape))
    outputs = package(*args)
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else outputs
    want = [[sizes.get(d, d) for d in t["shape"]] for t in spec["outputs"]]
    assert [list(o.shape) for o in outputs] == want, (name, want)
assert not any(m.startswith("sam2_fast") for m in sys.modules)
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=out)


def test_image_features_match(exported):
    _, _, _, predictor, runtime = exported
    es.check_image_features(predictor, runtime)


def test_points_match(exported):
    es.check_points(*exported[3:], SIZE)


def test_box_as_two_corner_points_matches(exported):
    es.check_box(*exported[3:], SIZE)


def test_mask_prompt_matches(exported):
    es.check_mask_prompt(*exported[3:], SIZE)


def test_batch_of_four_prompts_with_padding_matches(exported):
    es.check_batch_with_padding(*exported[3:], SIZE)


@pytest.mark.parametrize("num_memories,num_pointers", [(1, 1), (3, 5), (7, 16)])
def test_memory_graphs_match_the_torch_modules(exported, num_memories, num_pointers):
    """The packages against the graph modules they were compiled from (which the ONNX tests
    hold against the official memory assembly), at memory and pointer counts other than the
    traced ones."""
    model, out, _, _, _ = exported
    g = SIZE // 16
    gen = torch.Generator().manual_seed(num_memories)
    image_embed = torch.randn(1, 256, g, g, generator=gen)
    memory = torch.randn(num_memories, 64, g, g, generator=gen)
    memory_tpos = torch.arange(num_memories) % model.num_maskmem
    obj_ptrs = torch.randn(num_pointers, 256, generator=gen)
    obj_ptr_tpos = torch.linspace(0, 1, num_pointers)
    with torch.no_grad():
        want = MemoryAttentionGraph(model)(image_embed, memory, memory_tpos, obj_ptrs, obj_ptr_tpos)
    (got,) = open_package(out, "memory_attention").run(None, {
        "image_embed": image_embed.numpy(), "memory": memory.numpy(), "memory_tpos": memory_tpos.numpy(),
        "obj_ptrs": obj_ptrs.numpy(), "obj_ptr_tpos": obj_ptr_tpos.numpy()})
    assert es.rel_l2(got, want.numpy()) <= es.LOGITS_REL_L2

    logits = torch.randn(1, 1, SIZE // 4, SIZE // 4, generator=gen) * 4
    for from_points, score in ((1.0, 2.0), (0.0, -3.0)):
        inputs = (image_embed, logits, torch.tensor([[score]]), torch.tensor([from_points]))
        with torch.no_grad():
            want = MemoryEncoderGraph(model)(*inputs)
        (got,) = open_package(out, "memory_encoder").run(None, dict(zip(
            ["image_embed", "mask_logits", "object_score_logits", "is_mask_from_pts"], (x.numpy() for x in inputs))))
        assert es.rel_l2(got, want.numpy()) <= es.LOGITS_REL_L2


def test_aoti_tracker_matches_the_video_predictor(exported):
    """Object 1 from a click, object 2 from a box on a later frame (export_support)."""
    model, out, _, _, _ = exported
    es.check_two_object_tracking(model, AotiVideoTracker(out), NUM_FRAMES, SIZE, MEAN_IOU)


def _ppm(path, image: np.ndarray) -> None:
    h, w, _ = image.shape
    path.write_bytes(b"P6\n# sam2-fast test\n%d %d\n255\n" % (w, h) + image.tobytes())


def test_cpp_example_builds_and_runs(exported, tmp_path):
    """examples/aoti_image_encoder: CMake against this interpreter's torch, then the binary on a
    PPM of the model's size (our predictor's features) and of another size (resized in C++
    as our transforms resize)."""
    if shutil.which("cmake") is None and os.environ.get("CI") != "true":
        pytest.skip("cmake is not installed")
    _, out, _, predictor, _ = exported
    build = tmp_path / "build"
    subprocess.run(["cmake", "-S", EXAMPLE, "-B", str(build), f"-DTORCH_PYTHON={sys.executable}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "-j2"], check=True, capture_output=True)
    binary = str(build / "sam2_encode")

    shapes = {"image_embed": (1, 256, SIZE // 16, SIZE // 16), "high_res_feats_0": (1, 32, SIZE // 4, SIZE // 4),
              "high_res_feats_1": (1, 64, SIZE // 8, SIZE // 8)}
    for image in (es.test_image(SIZE), es.clip(1, 300)[0][:, :280]):
        _ppm(tmp_path / "image.ppm", image)
        result = subprocess.run([binary, str(out / "image_encoder.pt2"), str(tmp_path / "image.ppm"), str(tmp_path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        predictor.set_image(image)
        ours = [predictor._features["image_embed"], *predictor._features["high_res_feats"]]
        for (name, shape), want in zip(shapes.items(), ours):
            assert f"{name} [{', '.join(map(str, shape))}]" in result.stdout
            got = np.fromfile(tmp_path / f"{name}.f32", np.float32).reshape(shape)
            assert es.rel_l2(got, want.numpy()) <= es.LOGITS_REL_L2

    (tmp_path / "bad.ppm").write_bytes(b"P3\n1 1\n255\n0 0 0\n")
    result = subprocess.run([binary, str(out / "image_encoder.pt2"), str(tmp_path / "bad.ppm"), str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "not a binary PPM" in result.stderr
    result = subprocess.run([binary], capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def test_cli_compiles_chosen_parts_in_bf16(exported, tmp_path):
    """``sam2-fast export aoti --dtype bf16 --parts image_encoder prompt_decoder``: only those
    packages, bf16 (autocast) inside, float32 in and out, close to float32 (the module
    docstring has the tolerances)."""
    model, _, _, predictor, _ = exported
    rc, stdout, stderr = run_cli(["export", "aoti", "--random-weights", "--image-size", str(SIZE), "--dtype", "bf16",
                                  "--parts", "image_encoder", "prompt_decoder", "--out", str(tmp_path)])
    assert rc == 0, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "image_encoder.pt2", "prompt_decoder.pt2"]
    assert f"wrote {tmp_path / 'image_encoder.pt2'}" in stdout
    desc = json.loads((tmp_path / "export.json").read_text())
    assert desc["dtype"] == "bf16" and list(desc["files"]) == ["image_encoder.pt2", "prompt_decoder.pt2"]
    # --random-weights is seed 0, as the tracking model, whose object-score bias only the
    # decoder's object_score_logits see
    runtime = es.ImageRuntime(open_package(tmp_path, "image_encoder"), open_package(tmp_path, "prompt_decoder"), SIZE)
    image = es.test_image(SIZE)
    predictor.set_image(image)
    runtime.set_image(predictor._transforms.to_input(image).numpy()[None])
    assert all(f.dtype == np.float32 for f in runtime.feats)
    es.check_image_features(predictor, runtime, **BF16)
    assert es.rel_l2(runtime.feats[0], predictor._features["image_embed"].numpy()) > es.LOGITS_REL_L2  # bf16 inside
    es.check_points(predictor, runtime, SIZE, **BF16)
    es.check_box(predictor, runtime, SIZE, **BF16)


def test_unsupported_options_fail_naming_the_argument(exported, tmp_path):
    model = exported[0]
    with pytest.raises(InvalidInputError, match="dtype"):
        export_aoti(model, tmp_path, dtype="fp16")
    with pytest.raises(InvalidInputError, match="parts"):
        export_aoti(model, tmp_path, parts=["image_encoder", "decoder"])
    with pytest.raises(InvalidTypeError, match="model"):
        export_aoti(torch.nn.Linear(2, 2), tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(InvalidInputError, match="memory_encoder.pt2"):
        open_package(exported[1], "memory_encoder", {"files": {}})
    rc, stdout, _ = run_cli(["export", "aoti", "--help"])  # the CLI writes the choices out (no torch import)
    assert rc == 0 and "{" + ",".join(DTYPES) + "}" in stdout
    rc, _, stderr = run_cli(["export", "aoti", "--dtype", "int8", "--out", str(tmp_path)])
    assert rc == 2 and "dtype" in stderr
    rc, _, stderr = run_cli(["export", "aoti", "--parts", "decoder", "--out", str(tmp_path)])
    assert rc == 2 and "parts" in stderr and all(repr(part) in stderr for part in PARTS)
