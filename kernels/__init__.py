"""Triton kernels of sam2-fast, one module per kernel family (installed as ``sam2_fast.kernels``).

No model code lives here: the public ops and their backend choice are in ``sam2_fast.ops``.
"""
