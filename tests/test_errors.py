"""The exception hierarchy (sam2_fast.errors) and the CLI's exit codes."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sam2_fast import errors
from sam2_fast.cli import main

PACKAGE = Path(__file__).resolve().parents[1]


def test_every_error_is_a_sam2_fast_error_and_a_builtin_one() -> None:
    from sam2_fast.checkpoint import CheckpointError, UnsafeCheckpointError
    from sam2_fast.hub import CheckpointNotFoundError
    from sam2_fast.ops import BackendError
    from sam2_fast.predictors.video_io import VideoReadError
    from sam2_fast.zoo import UnknownModelError

    expected = {
        errors.InvalidInputError: ValueError,
        errors.InvalidTypeError: TypeError,
        UnknownModelError: ValueError,
        CheckpointError: RuntimeError,
        UnsafeCheckpointError: RuntimeError,
        CheckpointNotFoundError: FileNotFoundError,
        VideoReadError: RuntimeError,
        BackendError: RuntimeError,
    }
    for cls, builtin in expected.items():
        assert issubclass(cls, errors.SAM2FastError) and issubclass(cls, builtin), cls
    assert errors.UnknownModelError is UnknownModelError
    assert issubclass(UnknownModelError, errors.InvalidInputError)


def test_the_library_raises_no_bare_value_or_type_errors() -> None:
    """Every ``raise`` of the package uses the hierarchy (the built-ins stay catchable)."""
    offenders = []
    for path in [*(PACKAGE / "sam2_fast").rglob("*.py"), *(PACKAGE / "zoo").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                if isinstance(func, ast.Name) and func.id in ("ValueError", "TypeError"):
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} raises {func.id}")
    assert not offenders, "\n".join(offenders)


def test_bad_prompt_raises_invalid_input_and_the_predictor_stays_usable() -> None:
    from sam2_fast import SAM2ImagePredictor, build_sam2

    predictor = SAM2ImagePredictor(build_sam2("sam2.1-hiera-tiny", None, device="cpu"))
    image = np.zeros((32, 48, 3), np.uint8)
    predictor.set_image(image)
    with pytest.raises(errors.InvalidInputError, match="point_coords"):
        predictor.predict(point_coords=np.array([[np.nan, 1.0]]), point_labels=np.array([1]))
    with pytest.raises(errors.InvalidTypeError, match="image"):
        predictor.set_image(np.zeros((32, 48, 3), np.float64))
    masks, scores, _ = predictor.predict(point_coords=np.array([[10.0, 10.0]]), point_labels=np.array([1]))
    assert masks.shape == (3, 32, 48) and scores.shape == (3,)


# ---------------------------------------------------------------------------------------------
# CLI exit codes: 0 success, 2 usage / rejected input, 1 runtime failure (one line), --debug


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "image.png"
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(path)
    return path


def test_usage_errors_exit_2(image_file: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["segment"])
    assert exc.value.code == 2
    capsys.readouterr()
    assert main(["segment", str(image_file), "--point", "1,1", "--model", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint found for 'no-such-model'") and "Traceback" not in err


def test_runtime_failure_exits_1_with_one_line(monkeypatch, image_file: Path, tiny_pt_file: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from sam2_fast.predictors import image_predictor

    def fail(self, image):
        raise RuntimeError("out of memory\nsecond line")

    monkeypatch.setattr(image_predictor.SAM2ImagePredictor, "set_image", fail)
    argv = ["segment", str(image_file), "--point", "5,5", "--model", str(tiny_pt_file), "--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == "error: RuntimeError: out of memory (run with --debug for the traceback)\n"
    with pytest.raises(RuntimeError, match="out of memory"):
        main(["--debug", *argv])


def test_interrupt_exits_130_with_one_line(monkeypatch, image_file: Path, tiny_pt_file: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    from sam2_fast.predictors import image_predictor

    def interrupted(self, image):
        raise KeyboardInterrupt

    monkeypatch.setattr(image_predictor.SAM2ImagePredictor, "set_image", interrupted)
    argv = ["segment", str(image_file), "--point", "5,5", "--model", str(tiny_pt_file), "--device", "cpu"]
    assert main(argv) == 130
    assert capsys.readouterr().err == "error: interrupted\n"
    with pytest.raises(KeyboardInterrupt):
        main(["--debug", *argv])
