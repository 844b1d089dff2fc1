"""``torch.compile`` setup of a model's components: the mode and Inductor options per device,
and the output cloning that the CUDA-graph modes need. Nothing here runs at import."""

from __future__ import annotations

from typing import Callable, List, Mapping, Optional

import torch
from torch import nn

from sam2_fast.errors import InvalidInputError

#: the ``torch.compile`` modes that replay CUDA graphs (their outputs are overwritten by the next replay)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def cloning_outputs(compiled: Callable) -> Callable:
    """``compiled`` (a ``torch.compile``d forward) with every tensor of its output cloned: a
    CUDA graph replay writes its outputs into the memory of the previous replay's."""
    from torch.utils._pytree import tree_map_only

    def forward(*args, **kwargs):
        return tree_map_only(torch.Tensor, torch.clone, compiled(*args, **kwargs))

    forward._torchdynamo_orig_callable = compiled._torchdynamo_orig_callable  # marks it compiled
    forward.compiled = compiled
    return forward


def compile_components(
    components: Mapping[str, nn.Module], device: torch.device, mode: Optional[str] = None
) -> List[str]:
    """Replace the ``forward`` of each of ``components`` (name -> module, on ``device``) with
    its ``torch.compile``d version, with ``dynamic=None``: static shapes first, then the
    dimensions that changed dynamic. Components already compiled are left as they are.
    Returns the names compiled now.

    ``mode``: a ``torch.compile`` mode of this torch; by default
    ``"max-autotune-no-cudagraphs"`` on CUDA and ``"default"`` elsewhere. In the modes with
    CUDA graphs (:data:`CUDA_GRAPH_MODES`) each output is cloned as it comes out
    (:func:`cloning_outputs`), as the official VOS predictor does.

    On a CPU the generated C++ is not vectorised (``cpp.simdlen=1``): torch 2.14's
    vectorised CPU code computes NaN for ``layer_norm(x + linear(x))`` under bfloat16
    autocast when ``x`` is a permuted view (the decoder's and memory attention's image
    tokens are), while the same graph is right unvectorised and in float32.
    """
    import torch._inductor

    modes = tuple(torch._inductor.list_mode_options())  # this torch's modes
    if mode is not None and mode not in modes:
        raise InvalidInputError(f"mode: expected None or one of {', '.join(map(repr, modes))}; got {mode!r}")
    options = None
    if device.type == "cuda":
        mode = mode or "max-autotune-no-cudagraphs"
    elif device.type == "cpu":
        # torch.compile takes a mode or options, not both: the mode's options, unvectorised
        options = {**torch._inductor.list_mode_options(mode or "default"), "cpp.simdlen": 1}
    graphs = mode in CUDA_GRAPH_MODES
    compiled = []
    for name, module in components.items():
        if hasattr(module.forward, "_torchdynamo_orig_callable"):
            continue
        forward = torch.compile(module.forward, mode=None if options else mode, options=options)
        module.forward = cloning_outputs(forward) if graphs else forward
        compiled.append(name)
    return compiled


def compile_image_encoder(image_encoder: nn.Module) -> None:
    """The official ``compile_image_encoder=True``: the image encoder's forward compiled whole
    (``fullgraph``, static shapes) in ``"max-autotune"`` mode."""
    image_encoder.forward = torch.compile(
        image_encoder.forward, mode="max-autotune", fullgraph=True, dynamic=False
    )
