"""Export of SAM 2 to deployment formats.

* :func:`export_onnx`: ``image_encoder.onnx`` + ``prompt_decoder.onnx`` + ``export.json``
  (:mod:`sam2_fast.export.onnx`), traced from the plain torch reference ops, no complex
  numbers and no custom ops in the graphs: they run in onnxruntime as they are.
"""

from sam2_fast.export.onnx import export_onnx

__all__ = ["export_onnx"]
