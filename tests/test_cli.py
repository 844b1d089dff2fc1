"""The ``sam2-fast`` command line: info, segment, convert, demo, and its error messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_fast.cli import main
from sam2_fast.sample import SAMPLE_OBJECTS, sample_image

TINY = "sam2.1-hiera-tiny"


@pytest.fixture(scope="module")
def image_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "scene.png"
    Image.fromarray(sample_image(256, 384)).save(path)
    return path


def test_info_console_script_runs_without_cuda_initialisation(tmp_path):
    code = (
        "import sys, torch; from sam2_fast.cli import main; rc = main(['info']); "
        "assert not torch.cuda.is_initialized(); sys.exit(rc)"
    )
    # run outside the repository so the installed package is imported, not the source tree
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    import sam2_fast

    assert sam2_fast.__version__ in out.stdout
    assert "connected_components" in out.stdout


def test_segment_with_a_local_checkpoint_writes_mask_and_overlay(tmp_path, image_file, tiny_pt_file, capsys):
    out = tmp_path / "mask.png"
    rc = main(["segment", str(image_file), "--point", "115,125", "--point", "300,60,0",
               "--model", str(tiny_pt_file), "--out", str(out), "--device", "cpu"])
    assert rc == 0
    mask = np.asarray(Image.open(out))
    overlay = np.asarray(Image.open(tmp_path / "mask_overlay.png"))
    assert mask.shape == (256, 384) and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == (256, 384, 3)
    assert "predicted IoU" in capsys.readouterr().out

    # the PNG is exactly what the Python API predicts for the same prompts
    from sam2_fast import SAM2ImagePredictor, build_sam2

    predictor = SAM2ImagePredictor(build_sam2(TINY, tiny_pt_file, device="cpu"))
    predictor.set_image(sample_image(256, 384))
    masks, scores, _ = predictor.predict(point_coords=np.array([[115, 125], [300, 60]]),
                                         point_labels=np.array([1, 0]), multimask_output=False)
    np.testing.assert_array_equal(mask > 0, masks[np.argmax(scores)] > 0)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--point", "1,2,3,4"], "--point X,Y"),
        (["--point", "a,b"], "--point X,Y"),
        (["--point", "10,10,7"], "label must be 1"),
        (["--box", "1,2,3"], "--box X0,Y0,X1,Y1"),
    ],
)
def test_segment_rejects_malformed_prompt_options(image_file, args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(image_file), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_segment_reports_bad_inputs_clearly(tmp_path, image_file, tiny_pt_file, capsys):
    with pytest.raises(SystemExit, match="does not exist"):
        main(["segment", str(tmp_path / "missing.png"), "--point", "1,1", "--model", str(tiny_pt_file)])
    text = tmp_path / "not_an_image.png"
    text.write_text("hello")
    with pytest.raises(SystemExit, match="could not be read as an image"):
        main(["segment", str(text), "--point", "1,1", "--model", str(tiny_pt_file)])
    with pytest.raises(SystemExit, match="at least one --point"):
        main(["segment", str(image_file), "--model", str(tiny_pt_file)])
    rc = main(["segment", str(image_file), "--point", "999,10", "--model", str(tiny_pt_file), "--device", "cpu",
               "--out", str(tmp_path / "m.png")])
    assert rc == 2 and "outside" in capsys.readouterr().err
    rc = main(["segment", str(image_file), "--point", "1,1", "--model", "sam2.1-hiera-tinny"])
    err = capsys.readouterr().err
    assert rc == 2 and "sam2.1-hiera-tiny" in err  # suggests the close name


def test_convert_pt_to_safetensors_round_trips(tmp_path, tiny_pt_file, tiny_state_dict):
    from sam2_fast.checkpoint import read_state_dict

    dst = tmp_path / "tiny.safetensors"
    assert main(["convert", str(tiny_pt_file), str(dst)]) == 0
    loaded = read_state_dict(dst)
    assert loaded.keys() == tiny_state_dict.keys()
    assert all(torch.equal(loaded[k], tiny_state_dict[k]) for k in loaded)


def test_demo_falls_back_to_random_weights_with_a_warning(tmp_path, offline_hub, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.err and "Tried, in order" in captured.err
    assert "RANDOM weights" in captured.out
    for name in ("sample.png", "mask.png", "overlay.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "demo" / "sample.png")), sample_image())


def test_demo_uses_real_weights_from_the_hub_cache(tmp_path, offline_hub, tiny_pt_file, capsys):
    """A checkpoint in the Hugging Face cache layout is found without network access."""
    repo = offline_hub / "models--facebook--sam2.1-hiera-tiny"
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    os.symlink(tiny_pt_file, snapshot / "sam2.1_hiera_tiny.pt")
    assert main(["demo", "--out", str(tmp_path / "demo"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM" not in captured.err + captured.out
    assert "pretrained" in captured.out
    name, (x, y) = next(iter(SAMPLE_OBJECTS.items()))
    assert f"({x}, {y})" in captured.out
