"""sam2_fast.info: what `sam2-fast info` prints, gathered without initialising CUDA."""

from __future__ import annotations

import torch

from sam2_fast.info import collect_info, format_info


def test_collect_info_reports_versions_extension_and_ops() -> None:
    info = collect_info()
    assert info["torch"]["version"] == torch.__version__
    assert set(info["extension"]) == {"loaded", "reason", "build_info"}
    verdicts = info["ops"]["connected_components"]
    assert set(verdicts) == {"cpu", "cuda"}
    assert verdicts["cpu"]["selected"] in ("cpp", "reference")
    assert verdicts["cpu"]["verdicts"]["reference"] is None
    assert verdicts["cuda"]["verdicts"]["cpp"] == "mask is on cuda, this backend runs on cpu"


def test_info_does_not_initialise_cuda() -> None:
    format_info()
    assert not torch.cuda.is_initialized()


def test_format_info_names_every_backend() -> None:
    text = format_info()
    assert "sam2-fast" in text and "connected_components" in text
    for backend in ("cuda", "cpp", "reference"):
        assert backend in text


def test_built_cuda_ops_are_marked_not_runnable_without_a_device() -> None:
    info = collect_info(query_devices=True)
    text = format_info(info)
    build = info["extension"]["build_info"]
    if build is None or not build["cuda"]:
        assert "not runnable here" not in text
    elif torch.cuda.is_available():
        assert "not runnable here" not in text and "CUDA device(s) available" in text
    else:
        assert "built, not runnable here (no CUDA device)" in text
