"""Deterministic random weights for any SAM 2 config (and EdgeTAM's, a subclass).

Used by tests (the same weights go into this project's model and the official one) and by
the demo when no real checkpoint is available. Every tensor is non-trivial (unlike the
modules' default init, which leaves position embeddings at zero) and scaled so activations
stay O(1): linear/conv weights ~ N(0, 1/fan_in), norm scales ~ 1 + N(0, 0.1^2),
biases ~ N(0, 0.02^2), embeddings ~ N(0, 1), other parameters ~ N(0, 0.1^2); batch norms
(EdgeTAM's RepViT) get scales ~ 0.5 (1 + N(0, 0.1^2)), running means ~ N(0, 0.1^2), running
variances in [0.5, 1.5] and a zero batch count.
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

from sam2_fast.modeling.common import LayerNorm2d
from sam2_fast.modeling.config import SAM2Config


def _random_tensor(module: nn.Module, name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=gen)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and name != "bias":
        if name == "num_batches_tracked":
            return torch.zeros(shape, dtype=torch.long)
        if name == "running_mean":
            return 0.1 * noise
        if name == "running_var":
            return 0.5 + torch.rand(shape, generator=gen)
        return 0.5 * (1.0 + 0.1 * noise)  # halved: RepViT's residual stages stay O(1) (1e6 at scale 1)
    if name == "bias":
        return 0.02 * noise
    if isinstance(module, (nn.LayerNorm, LayerNorm2d)):
        return 1.0 + 0.1 * noise
    if isinstance(module, nn.ConvTranspose2d):
        return noise / math.sqrt(shape[0])
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        return noise / math.sqrt(math.prod(shape[1:]))
    if isinstance(module, nn.Embedding) or name == "positional_encoding_gaussian_matrix":
        return noise
    return 0.1 * noise


def random_state_dict(config: SAM2Config, seed: int = 0) -> Dict[str, torch.Tensor]:
    """A complete state dict (official key layout) of random float32 weights for ``config``."""
    from sam2_fast.modeling.sam2_base import SAM2Base

    from sam2_fast.modeling.common import meta_device

    with meta_device():
        model = SAM2Base.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    out: Dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():
        tensors = list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False))
        for name, tensor in tensors:
            key = f"{mod_name}.{name}" if mod_name else name
            out[key] = _random_tensor(module, name, tensor.shape, gen)
    missing = set(model.state_dict()) - set(out)
    if missing:  # pragma: no cover - guards against modules with unusual tensors
        raise RuntimeError(f"random_state_dict did not cover {sorted(missing)}")
    return {k: out[k] for k in model.state_dict()}
