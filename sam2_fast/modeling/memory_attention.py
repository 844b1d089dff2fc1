"""Memory attention: conditions the current frame's features on past-frame memories."""

from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch import Tensor, nn

from sam2_fast.errors import InvalidInputError
from sam2_fast.modeling.common import Linear, activation_fn, autocast_weight_dtype, feed_forward, residual_norm
from sam2_fast.modeling.transformer import RoPEAttention


class MemoryAttentionLayer(nn.Module):
    """Pre-norm self-attention (RoPE), cross-attention to memories (RoPE on the spatial
    memory keys, not on object-pointer tokens) and an MLP, each with a residual."""

    def __init__(
        self,
        activation: str,
        cross_attention: RoPEAttention,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        self_attention: RoPEAttention,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation_str = activation
        self.activation = activation_fn(activation)
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def _forward_sa(self, tgt: Tensor, query_pos: Optional[Tensor]) -> Tensor:
        tgt2 = self.norm1(tgt)
        q = k = tgt2 + query_pos if self.pos_enc_at_attn else tgt2
        dtype = autocast_weight_dtype(q, self.self_attn.q_proj.weight)
        if dtype is not None and q.dtype == torch.float32:
            q = k = q.to(dtype)  # the cast q_proj and k_proj would each make, made once
        return tgt + self.dropout1(self.self_attn(q, k, v=tgt2))

    def _cross_attention(
        self,
        tgt: Tensor,
        memory: Tensor,
        query_pos: Optional[Tensor],
        pos: Optional[Tensor],
        num_k_exclude_rope: int = 0,
        memory_keys: Optional[Tensor] = None,
    ) -> Tensor:
        """The cross-attention's output (before the residual); ``memory_keys``: ``memory +
        pos`` (or ``memory``) made once for every layer by :class:`MemoryAttention`."""
        tgt2 = self.norm2(tgt)
        if memory_keys is None:
            memory_keys = memory + pos if self.pos_enc_at_cross_attn_keys else memory
        return self.cross_attn_image(
            q=tgt2 + query_pos if self.pos_enc_at_cross_attn_queries else tgt2,
            k=memory_keys,
            v=memory,
            num_k_exclude_rope=num_k_exclude_rope,
        )

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        num_k_exclude_rope: int = 0,
        memory_keys: Optional[Tensor] = None,
        self_attended: bool = False,
    ) -> Tensor:
        """``self_attended``: ``tgt`` is already :meth:`_forward_sa`'s output (computed once
        for several items with the same queries, see :meth:`MemoryAttention.first_self_attention`)."""
        if not self_attended:
            tgt = self._forward_sa(tgt, query_pos)
        if self.training:
            tgt = tgt + self.dropout2(self._cross_attention(tgt, memory, query_pos, pos, num_k_exclude_rope, memory_keys))
            tgt2 = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
            return tgt + self.dropout3(tgt2)
        # dropout is the identity: the residual add and norm3 as the op residual_norm (one
        # pass under autocast on a CPU), the last residual in place (no autograd: a new sum)
        attended = self._cross_attention(tgt, memory, query_pos, pos, num_k_exclude_rope, memory_keys)
        tgt, normed = residual_norm(self.norm3, tgt, attended)
        tgt2 = feed_forward(normed, self.linear1, self.activation, self.linear2, batch_first=False)
        return tgt + tgt2 if torch.is_grad_enabled() else tgt.add_(tgt2)


class MemoryAttention(nn.Module):
    """A stack of :class:`MemoryAttentionLayer` + final LayerNorm.

    Inputs and output are sequence-first, as in the official module: ``curr [HW, B, C]``,
    ``memory [M, B, C_mem]``; the last ``num_obj_ptr_tokens`` memory tokens are object
    pointers (not rotated).
    """

    def __init__(
        self,
        d_model: int,
        pos_enc_at_input: bool,
        layer_factory,
        num_layers: int,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.layers = nn.ModuleList(layer_factory() for _ in range(num_layers))
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first

    def forward(
        self,
        curr: Union[Tensor, List[Tensor]],
        memory: Tensor,
        curr_pos: Union[Tensor, List[Tensor], None] = None,
        memory_pos: Optional[Tensor] = None,
        num_obj_ptr_tokens: int = 0,
        first_self_attention: Optional[Tensor] = None,
    ) -> Tensor:
        """``first_self_attention``: :meth:`first_self_attention`'s output for these queries
        (``curr`` and ``curr_pos`` then being that one item's, expanded to the batch): the first
        layer's self-attention is not computed again."""
        curr, curr_pos = self._unlisted(curr, curr_pos)
        if curr.shape[1] != memory.shape[1]:
            raise InvalidInputError(
                f"batch size of curr ({curr.shape[1]}) and memory ({memory.shape[1]}) differ"
            )
        if first_self_attention is None:
            output = self._input_tokens(curr, curr_pos)
        else:  # the first layer's input is not needed: its self-attention output is given
            one_item = (1, curr.shape[0], curr.shape[2])  # batch-first, as first_self_attention makes it
            if not self.batch_first or tuple(first_self_attention.shape) != one_item:
                raise InvalidInputError(
                    f"first_self_attention must be one item's {list(one_item)} (batch-first layers), "
                    f"got {list(first_self_attention.shape)}"
                )
            output = first_self_attention.expand(curr.shape[1], -1, -1)
        if self.batch_first:
            curr_pos = curr_pos.transpose(0, 1) if curr_pos is not None else None
            memory = memory.transpose(0, 1)
            memory_pos = memory_pos.transpose(0, 1) if memory_pos is not None else None
        memory, memory_keys = self._shared_memory_inputs(memory, memory_pos)
        for i, layer in enumerate(self.layers):
            output = layer(
                tgt=output,
                memory=memory,
                pos=memory_pos,
                query_pos=curr_pos,
                num_k_exclude_rope=num_obj_ptr_tokens,
                **({} if memory_keys is None else {"memory_keys": memory_keys}),
                **({"self_attended": True} if i == 0 and first_self_attention is not None else {}),
            )
        normed = self.norm(output)
        if self.batch_first:
            normed = normed.transpose(0, 1)
        return normed

    def first_self_attention(
        self, curr: Union[Tensor, List[Tensor]], curr_pos: Union[Tensor, List[Tensor], None] = None
    ) -> Optional[Tensor]:
        """The first layer's self-attention output for one item's queries (``curr [HW, 1, C]``,
        as :meth:`forward` takes them), batch-first ``[1, HW, C]``: it depends on the current
        frame only, so the objects tracked on it share it (:meth:`forward`'s
        ``first_self_attention``). None when the first layer is not a
        :class:`MemoryAttentionLayer` or while training (dropout differs per item)."""
        curr, curr_pos = self._unlisted(curr, curr_pos)
        if curr.shape[1] != 1:
            raise InvalidInputError(f"curr must hold one item ([HW, 1, C]), got {list(curr.shape)}")
        if not self.layers or type(self.layers[0]) is not MemoryAttentionLayer or self.training:  # noqa: E721
            return None
        output = self._input_tokens(curr, curr_pos)
        if not self.batch_first:
            return None
        return self.layers[0]._forward_sa(output, curr_pos.transpose(0, 1) if curr_pos is not None else None)

    @staticmethod
    def _unlisted(curr, curr_pos):
        if isinstance(curr, list):
            if not isinstance(curr_pos, list) or len(curr) != 1 or len(curr_pos) != 1:
                raise InvalidInputError("curr and curr_pos must both be lists of one tensor")
            curr, curr_pos = curr[0], curr_pos[0]
        return curr, curr_pos

    def _input_tokens(self, curr: Tensor, curr_pos: Optional[Tensor]) -> Tensor:
        """The first layer's input: ``curr`` (+ 0.1 ``curr_pos``), batch-first when the layers are."""
        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        return output.transpose(0, 1) if self.batch_first else output

    def _shared_memory_inputs(self, memory: Tensor, memory_pos: Optional[Tensor]):
        """``(memory, memory_keys)`` for every layer: when all layers add the position to their
        keys, ``memory + memory_pos`` once (else None: each layer makes its own); under autocast,
        both cast once to the dtype each layer's projections would cast them to (the same
        values; four layers, one cast)."""
        layers = list(self.layers)
        if not layers or not all(type(layer) is MemoryAttentionLayer for layer in layers):  # noqa: E721
            return memory, None
        keys = None
        if memory_pos is not None and all(layer.pos_enc_at_cross_attn_keys for layer in layers):
            keys = memory + memory_pos
        elif not any(layer.pos_enc_at_cross_attn_keys for layer in layers):
            keys = memory
        attn = layers[0].cross_attn_image
        dtype = autocast_weight_dtype(memory, attn.k_proj.weight)
        if dtype is None or torch.is_grad_enabled():
            return memory, keys
        if keys is not None and keys.dtype == torch.float32:
            keys = keys.to(dtype)
        # the values: the narrow algebra casts them to the queries' dtype, the official one
        # feeds them to v_proj, which casts them the same way
        if memory.dtype == torch.float32:
            memory = memory.to(dtype)
        return memory, keys
