"""Export of SAM 2 to deployment formats.

* :func:`export_onnx`: ``image_encoder.onnx`` + ``prompt_decoder.onnx`` +
  ``memory_attention.onnx`` + ``memory_encoder.onnx`` + ``export.json``
  (:mod:`sam2_fast.export.onnx`, :mod:`sam2_fast.export.onnx_video`), traced from the plain
  torch reference ops, no complex numbers and no custom ops in the graphs: they run in
  onnxruntime as they are.
* :func:`export_aoti`: the same four graphs as AOTInductor ``.pt2`` packages (+
  ``export.json``), for ``torch._inductor.aoti_load_package`` or C++
  (:mod:`sam2_fast.export.aoti`); :class:`AotiVideoTracker` tracks with them.
* :class:`OnnxVideoTracker`: tracks objects through a clip from those files with numpy and
  onnxruntime only (:mod:`sam2_fast.export.onnx_tracker`; importing it imports no torch).
"""

from typing import Any

__all__ = ["AotiVideoTracker", "OnnxVideoTracker", "export_aoti", "export_onnx"]


def __getattr__(name: str) -> Any:
    # lazy: the tracker runs where torch is not installed
    if name == "export_onnx":
        from sam2_fast.export.onnx import export_onnx

        return export_onnx
    if name == "OnnxVideoTracker":
        from sam2_fast.export.onnx_tracker import OnnxVideoTracker

        return OnnxVideoTracker
    if name in ("export_aoti", "AotiVideoTracker"):
        from sam2_fast.export import aoti

        return getattr(aoti, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
