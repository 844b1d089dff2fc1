"""Attention layers and SAM's two-way transformer (mask decoder)."""

from __future__ import annotations

import math
from typing import Dict, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.common import MLP, Linear, autocast_weight_dtype, kept_across_calls
from sam2_fast.modeling.position_encoding import axial_rope_cos_sin
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class
from sam2_fast.ops.attention import attention
from sam2_fast.ops.rope_attention import rope_attention, rotate_tokens


class Attention(nn.Module):
    """Multi-head attention whose projections may shrink the width by ``downsample_rate``
    and whose keys/values may have another width (``kv_in_dim``)."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise InvalidInputError(
                f"num_heads ({num_heads}) must divide the internal width ({self.internal_dim})"
            )
        self.q_proj = Linear(embedding_dim, self.internal_dim)
        self.k_proj = Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _separate_heads(self, x: Tensor) -> Tensor:
        """``[B, N, C]`` -> ``[B, heads, N, C / heads]``."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _recombine_heads(x: Tensor) -> Tensor:
        """``[B, heads, N, Ch]`` -> ``[B, N, heads * Ch]``."""
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        v = self._separate_heads(self.v_proj(v))
        if self.training and self.dropout_p > 0:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p)
        else:  # the op attention: torch's SDPA or, on a CPU, the C++ flash attention (measured)
            out = attention(q, k, v)
        return self.out_proj(self._recombine_heads(out))


class RoPEAttention(Attention):
    """Attention with 2D axial rotary position encoding on a square query grid.

    Keys are ``r`` stacked copies of the query grid (``rope_k_repeat``: memories of ``r``
    past frames) followed by ``num_k_exclude_rope`` tokens that are not rotated (object
    pointers).
    """

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: Tuple[int, int] = (64, 64),
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self.feat_sizes = tuple(feat_sizes)
        self._rope_cache: Dict[Tuple[int, str], Tuple[Tensor, Tensor]] = {}

    def rope_tables(self, num_tokens: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        """Cos/sin tables ``[num_tokens, head_dim / 2]`` for a square grid of ``num_tokens``."""
        key = (num_tokens, str(device))
        tables = self._rope_cache.get(key)
        if tables is None:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise InvalidInputError(
                    f"RoPE attention needs a square query grid, got {num_tokens} query tokens"
                )
            tables = axial_rope_cos_sin(
                self.internal_dim // self.num_heads, side, side, self.rope_theta, device=device
            )
            self._rope_cache[key] = tables
        return tables

    def forward(self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0) -> Tensor:
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        nq = q.shape[-2]
        cos, sin = self.rope_tables(nq, q.device)
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        if num_k_rope > 0:
            if num_k_rope != nq and not self.rope_k_repeat:
                raise InvalidInputError(f"{num_k_rope} rotated keys but {nq} queries; set rope_k_repeat=True")
            if num_k_rope % nq != 0:
                raise InvalidInputError(f"rotated keys ({num_k_rope}) must be a multiple of the queries ({nq})")
        if self.training and self.dropout_p > 0:
            v = self._separate_heads(self.v_proj(v))
            # dropout breaks the row sums the folded values rely on: the plain sequence
            q, k = rotate_tokens(q, cos, sin), rotate_tokens(k, cos, sin, num_k_exclude_rope)
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout_p)
            return self.out_proj(self._recombine_heads(out))
        return rope_values_op(self, q, k, v, cos, sin, num_k_exclude_rope)

    def narrow_values(self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor,
                      num_k_exclude_rope: int) -> Tensor:
        """The attention with values kept in their narrow input space (``kv_in_dim``): softmax
        rows sum to 1, so ``P (M W_v^T + b_v) W_o^T + b_o = (P M) (W_o W_v)^T + (W_o b_v + b_o)``,
        exactly; ``q``, ``k`` projected ``[B, heads, N, head_dim]``, ``v`` raw ``[B, Nk, kv_in_dim]``."""
        out = rope_attention(q, k, v.unsqueeze(1).to(q.dtype), cos, sin, num_k_exclude_rope)
        weight, bias = self._folded_value_output(out.dtype)
        b, h, n, c = out.shape
        return F.linear(out.transpose(1, 2).reshape(b, n, h * c), weight, bias)

    def projected_values(self, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor,
                         num_k_exclude_rope: int) -> Tensor:
        """The official sequence: ``v_proj``, attention with head-wide values, ``out_proj``."""
        v = self._separate_heads(self.v_proj(v))
        out = rope_attention(q, k, v.to(q.dtype), cos, sin, num_k_exclude_rope)
        return self.out_proj(self._recombine_heads(out))

    def _folded_value_output(self, dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """``out_proj . v_proj`` per head in ``dtype``: weight ``[C, heads * kv_in_dim]`` and
        bias ``[C]``; without autograd, computed once per version of the four weights."""
        if torch.is_grad_enabled():
            weight, bias = self._fold_value_output()
            return weight.to(dtype), bias.to(dtype)
        tensors = (self.v_proj.weight, self.v_proj.bias, self.out_proj.weight, self.out_proj.bias)
        return kept_across_calls(
            self, "_kept_fold", dtype, tensors, lambda: tuple(x.to(dtype) for x in self._fold_value_output())
        )

    def _fold_value_output(self) -> Tuple[Tensor, Tensor]:
        """The folded weights in the weights' own dtype (autocast off: one rounding, at the end)."""
        w_v, b_v = self.v_proj.weight, self.v_proj.bias
        w_o, b_o = self.out_proj.weight, self.out_proj.bias
        head_dim = self.internal_dim // self.num_heads
        with torch.autocast(w_v.device.type, enabled=False):
            blocks = [
                w_o[:, i * head_dim : (i + 1) * head_dim] @ w_v[i * head_dim : (i + 1) * head_dim]
                for i in range(self.num_heads)
            ]
            return torch.cat(blocks, dim=1), w_o @ b_v + b_o


# ---------------------------------------------------------------------------------------------
# the value algebra of RoPE attention, an op of its own: narrow values save 3/4 of the P V
# products, but on some machines the plain head-wide attention runs a faster kernel


def _values_shape_class(attn, q, k, v, cos, sin, num_k_exclude_rope) -> str:
    b, h, nq, d = q.shape
    dtype = str(q.dtype).removeprefix("torch.")
    return (f"{dtype} B{size_class(b)} heads {h} Nq {size_class(nq)} Nk {size_class(k.shape[2])} "
            f"D {d} values {attn.kv_in_dim} -> {attn.internal_dim}")


def _values_example(device: str) -> tuple:
    """One memory-attention cross-attention of sam2.1-tiny at 1024: 4096 queries, 7 memory
    frames and 64 object pointers (widths as the model's)."""
    with torch.device(device):
        attn = RoPEAttention(256, 1, downsample_rate=1, kv_in_dim=64, rope_k_repeat=True).eval()
        q = torch.zeros(1, 1, 4096, 256)
        k = torch.zeros(1, 1, 7 * 4096 + 64, 256)
        v = torch.zeros(1, 7 * 4096 + 64, 64)
    cos, sin = attn.rope_tables(4096, q.device)
    return attn, q, k, v, cos, sin, 64


def _narrow_refusal(attn, q, k, v, *rest) -> str | None:
    if attn.kv_in_dim >= attn.internal_dim:
        return f"the values ({attn.kv_in_dim}) are not narrower than the heads ({attn.internal_dim})"
    if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)) and attn.dropout_p > 0 and attn.training:
        return "dropout breaks the softmax row sums the folded values rely on"
    return None


rope_values_op = Op("rope_attention_values", example=_values_example, shape_class=_values_shape_class, kind="model")
rope_values_op.add_backend("narrow", lambda attn, *args: attn.narrow_values(*args), _narrow_refusal)
rope_values_op.add_backend("reference", lambda attn, *args: attn.projected_values(*args))  # the official sequence


def positioned_keys(keys: Tensor, key_pe: Tensor, proj: nn.Module) -> Tensor:
    """``keys + key_pe`` (the image tokens with their positions), which only projections read:
    under autocast, written straight in the dtype they cast it to (the float32 sum rounded once,
    the value each cast would make) instead of a float32 tensor cast by each projection."""
    dtype = autocast_weight_dtype(keys, proj.weight)
    if dtype is None or keys.dtype == dtype:
        return keys + key_pe
    out = torch.empty(torch.broadcast_shapes(keys.shape, key_pe.shape), dtype=dtype, device=keys.device)
    return torch.add(keys, key_pe, out=out)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token
    cross-attention (each with a residual and a LayerNorm)."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def token_self_attention(self, queries: Tensor, query_pe: Tensor) -> Tensor:
        """The first step: the tokens attend to each other (no residual in a first layer)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries)
        return self.norm1(queries)

    def forward(
        self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor
    ) -> Tuple[Tensor, Tensor]:
        queries = self.token_self_attention(queries, query_pe)

        q = queries + query_pe
        k = positioned_keys(keys, key_pe, self.cross_attn_token_to_image.k_proj)
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(q=k, k=q, v=queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """SAM's decoder transformer: prompt tokens and image tokens attend to each other."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor
    ) -> Tuple[Tensor, Tensor]:
        """``image_embedding``/``image_pe`` ``[B, C, h, w]``, ``point_embedding`` ``[B, N, C]``.

        Returns the processed tokens ``[B, N, C]`` and image tokens ``[B, h*w, C]``.
        """
        image_embedding = image_embedding.flatten(2).permute(0, 2, 1)
        image_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries, keys = point_embedding, image_embedding
        for layer in self.layers:
            queries, keys = layer(queries=queries, keys=keys, query_pe=point_embedding, key_pe=image_pe)
        q = queries + point_embedding
        k = positioned_keys(keys, image_pe, self.final_attn_token_to_image.k_proj)
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
