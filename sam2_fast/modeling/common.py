"""Small building blocks shared by the SAM 2 modules."""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Type

import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.errors import InvalidInputError


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them.

    State-dict layout matches the official ``sam2.modeling.sam2_utils.MLP`` (``layers.{i}``).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: Type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``[B, C, H, W]`` tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) * torch.rsqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def activation_fn(name: str):
    """The functional activation named in the official configs."""
    table = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    try:
        return table[name]
    except KeyError:
        raise InvalidInputError(f"activation must be one of {sorted(table)}, got {name!r}") from None


# ---------------------------------------------------------------------------------------------
# building on the meta device

_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
)
_init_lock = threading.Lock()


def _skip_on_meta(fn):
    @functools.wraps(fn)
    def init(tensor, *args, **kwargs):
        if isinstance(tensor, torch.Tensor) and tensor.is_meta:
            return tensor  # a meta tensor holds no values: nothing to initialise
        return fn(tensor, *args, **kwargs)

    init.__sam2_fast_skips_meta__ = True
    return init


@contextlib.contextmanager
def meta_device():
    """``with torch.device("meta")`` for building modules whose weights are loaded next.

    Module constructors run their random initialisation (``torch.nn.init``) even on the meta
    device, where it computes nothing but goes through torch's Python decompositions, which
    import ``torch._dynamo``: about 1 s of a cold start. Inside this context those functions
    return meta tensors untouched. The wrappers stay installed (they only skip meta tensors,
    which have no values to initialise, and call torch's function for every other tensor).
    """
    with _init_lock:
        for name in _INIT_FUNCTIONS:
            fn = getattr(torch.nn.init, name, None)
            if fn is not None and not getattr(fn, "__sam2_fast_skips_meta__", False):
                setattr(torch.nn.init, name, _skip_on_meta(fn))
    with torch.device("meta"):
        yield
