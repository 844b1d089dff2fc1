"""The mask decoder for many prompts on one image, with the image's share computed once.

Without a mask prompt, every prompt of an image starts the two-way transformer from the same
image tokens ``A [F, C]`` (``F = h * w``). What a prompt changes is small and structured, and
this module keeps it in that structure instead of materialising ``[F, C]`` per prompt:

* image->token attention adds ``O W_o^T + b_o`` where ``O = P V`` headwise: ``P [F, H, T]`` are
  the attention weights of the ``F`` image tokens over the ``T`` prompt tokens (softmax over
  ``T``) and ``V [H, T, d]`` the prompt tokens' values -- a product of rank ``<= H * T``;
* LayerNorm centres each row (a linear map), scales it by a per-row ``1 / sigma`` and applies
  the affine ``gamma, beta``; linear maps commute with all of it.

So the image stream of each prompt is always a sum of terms of three kinds (:class:`Shared`,
:class:`Attn`, :class:`Bias`): a shared ``[F, K]`` matrix with a per-prompt row scale, an
attention product ``(P V) G`` with a shared right factor ``G`` (row scales go into ``P``), and
a bias row with a per-prompt row scale. Linear maps act on the shared parts only (once per image, memoised);
attention logits and values, and LayerNorm's row variances, are computed term by term from
products whose inner size is ``T`` or ``H * T`` instead of ``C``. The upscaler's first
transposed convolution is linear too; only from its LayerNorm + GELU on is the work per prompt
full size. Exact algebra: equal to :meth:`MaskDecoder.forward` with ``repeat_image=True`` up to
float rounding (tests/test_shared_image_decoder.py holds it to 1e-4 relative).

Per prompt of the tiny model at 1024 px this is about 1.0 GFLOP instead of 3.5.

One file of ~700 lines on purpose: the term algebra, the transformer written on it and the
upscaler that consumes its terms are one derivation; split, each part would be unreadable
without the others.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sam2_fast._ext import register_fake_on_load
from sam2_fast.errors import InvalidInputError
from sam2_fast.ops._dispatch import Op
from sam2_fast.ops._tuning import size_class

__all__ = ["SharedImage", "prepare_shared_image", "predict_masks_shared_image"]


@dataclass
class Shared:
    """``d[:, :, None] * s``: a shared ``[F, K]`` matrix named ``key``, per-prompt row scale
    ``d [n, F]`` (None: 1)."""

    key: str
    s: Tensor
    d: Optional[Tensor] = None


@dataclass
class Attn:
    """``O @ g`` with ``O[n, f, h * dh + j] = sum_t p[n, h * T + t, f] v[n, h, t, j]``:
    attention weights ``p [n, H * T, F]`` (of image token ``f`` over the ``T`` tokens of head
    ``h``; LayerNorm's per-row scales are multiplied into them), values ``v [n, H, T, dh]``
    and a shared right factor ``g [H * dh, K]`` named ``key``."""

    key: str
    p: Tensor
    v: Tensor
    g: Tensor
    # right(), computed once: the LayerNorm variances and the next attention read it many times
    right_cache: Optional[Tensor] = field(default=None, repr=False, compare=False)

    def right(self) -> Tensor:
        """``[n, H * T, K]``: row ``(h, t)`` is ``v[:, h, t] @ g[h * dh:(h + 1) * dh]``."""
        if self.right_cache is None:
            n, heads, t, dh = self.v.shape
            g = self.g.view(heads, dh, -1)
            self.right_cache = torch.einsum("nhtj,hjk->nhtk", self.v, g).reshape(n, heads * t, -1)
        return self.right_cache

    def scaled(self, row_scale: Tensor) -> "Attn":
        """The same term with the weights of image token ``f`` times ``row_scale[:, f]``."""
        return Attn(self.key, self.p * row_scale[:, None, :], self.v, self.g, self.right_cache)


@dataclass
class Bias:
    """``e[:, :, None] * c[:, None, :]``: a row ``c [n, K]`` (or ``[1, K]``) on every image
    token, row scale ``e [n, F]`` (None: 1)."""

    c: Tensor
    e: Optional[Tensor] = None


Term = Union[Shared, Attn, Bias]


def _scale(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
    if a is None:
        return b
    return a if b is None else a * b


def _times(x: Tensor, scale: Optional[Tensor]) -> Tensor:
    """``x [n, F]`` (or ``[F]``) times a row scale."""
    return x if scale is None else x * scale


@dataclass
class SharedImage:
    """One image's tokens and the products of them that prompts share (memoised by name)."""

    image: Tensor  # [F, C]: image embedding + the (no-mask) dense prompt embedding
    pe: Tensor  # [F, C]
    h: int
    w: int
    feat_s0: Optional[Tensor]  # [F, 4, 4, C / 8], pixel (4y + 2i + i2, 4x + 2j + j2)
    feat_s1: Optional[Tensor]  # [F, 4, C / 4], pixel (2y + i, 2x + j)
    memo: Dict[str, Tensor] = field(default_factory=dict)

    def get(self, key: str, make: Callable[[], Tensor]) -> Tensor:
        value = self.memo.get(key)
        if value is None:
            value = self.memo[key] = make()
        return value


def prepare_shared_image(
    image_embeddings: Tensor,
    image_pe: Tensor,
    dense_prompt_embeddings: Tensor,
    high_res_features: Optional[List[Tensor]],
) -> SharedImage:
    """Shared state of one image: ``image_embeddings``, ``image_pe`` and
    ``dense_prompt_embeddings`` ``[1, C, h, w]`` (the same dense embedding for every prompt),
    ``high_res_features`` ``[[1, C/8, 4h, 4w], [1, C/4, 2h, 2w]]`` or None."""
    for name, x in (("image_embeddings", image_embeddings), ("image_pe", image_pe),
                    ("dense_prompt_embeddings", dense_prompt_embeddings)):
        if x.dim() != 4 or x.shape[0] != 1:
            raise InvalidInputError(f"{name}: expected one image [1, C, h, w], got {list(x.shape)}")
    _, c, h, w = image_embeddings.shape
    image = (image_embeddings + dense_prompt_embeddings)[0].flatten(1).t().contiguous()
    pe = image_pe[0].flatten(1).t().contiguous()
    feat_s0 = feat_s1 = None
    if high_res_features is not None:
        s0, s1 = high_res_features
        c0, c1 = s0.shape[1], s1.shape[1]
        # (c, y, i, x, j) -> (y, x, i, j, c)
        feat_s1 = s1[0].view(c1, h, 2, w, 2).permute(1, 3, 2, 4, 0).reshape(h * w, 4, c1)
        # (c, y, i, i2, x, j, j2) -> (y, x, i, j, i2, j2, c)
        feat_s0 = (
            s0[0].view(c0, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0).reshape(h * w, 4, 4, c0)
        )
    return SharedImage(image=image, pe=pe, h=h, w=w, feat_s0=feat_s0, feat_s1=feat_s1)


# ---------------------------------------------------------------------------------------------
# linear algebra on term lists


def _add(shared: SharedImage, a: List[Term], b: List[Term]) -> List[Term]:
    """``a + b``, merging unscaled shared matrices and unscaled biases."""
    out: List[Term] = []
    plain_shared: Optional[Shared] = None
    plain_bias: Optional[Tensor] = None
    for t in a + b:
        if isinstance(t, Shared) and t.d is None:
            if plain_shared is None:
                plain_shared = t
            else:
                s1, s2 = plain_shared, t
                key = f"({s1.key}+{s2.key})"
                plain_shared = Shared(key, shared.get(key, lambda: s1.s + s2.s))
        elif isinstance(t, Bias) and t.e is None:
            plain_bias = t.c if plain_bias is None else plain_bias + t.c
        else:
            out.append(t)
    if plain_shared is not None:
        out.insert(0, plain_shared)
    if plain_bias is not None:
        out.append(Bias(plain_bias))
    return out


def _map(shared: SharedImage, terms: List[Term], name: str, fn: Callable[[Tensor], Tensor]) -> List[Term]:
    """Apply a linear map of the columns (``fn``, no bias) to every term."""
    out: List[Term] = []
    for t in terms:
        if isinstance(t, Shared):
            key = f"{t.key}>{name}"
            out.append(Shared(key, shared.get(key, lambda t=t: fn(t.s)), t.d))
        elif isinstance(t, Attn):
            key = f"{t.key}>{name}"
            out.append(Attn(key, t.p, t.v, shared.get(key, lambda t=t: fn(t.g))))
        else:
            out.append(Bias(fn(t.c), t.e))
    return out


def _linear(shared: SharedImage, terms: List[Term], layer: nn.Linear, name: str) -> List[Term]:
    weight = layer.weight
    out = _map(shared, terms, name, lambda x: x @ weight.t())
    if layer.bias is not None:
        out = _add(shared, out, [Bias(layer.bias[None])])
    return out


def _rowdot(shared: SharedImage, a: Term, b: Term) -> Tensor:
    """Row-wise dot products ``[n, F]`` (or ``[F]``) of two terms."""
    if isinstance(b, Shared) and not isinstance(a, Shared):
        a, b = b, a
    if isinstance(b, Bias) and not isinstance(a, Bias):
        a, b = b, a
    if isinstance(a, Shared) and isinstance(b, Shared):
        key = f"<{a.key}|{b.key}>"
        dots = shared.get(key, lambda: (a.s * b.s).sum(-1))
        return _times(_times(dots, a.d), b.d)
    if isinstance(a, Shared) and isinstance(b, Attn):
        n, heads, t, dh = b.v.shape
        key = f"{a.key}@{b.key}^T"
        sg = shared.get(key, lambda: (a.s @ b.g.t()).view(-1, heads, dh).permute(1, 2, 0).contiguous())
        # x[n, h, t, f] = v[n, h, t] . sg[h, :, f]
        x = torch.bmm(b.v.transpose(0, 1).reshape(heads, n * t, dh), sg)
        x = x.view(heads, n, t, -1).transpose(0, 1)
        return _times((b.p.view(n, heads, t, -1) * x).sum((1, 2)), a.d)
    if isinstance(a, Bias) and isinstance(b, Shared):
        return _times(_times((b.s @ a.c.t()).t(), a.e), b.d)
    if isinstance(a, Bias) and isinstance(b, Attn):
        rc = torch.bmm(b.right(), a.c.expand(b.p.shape[0], -1)[:, :, None])  # [n, H*T, 1]
        return _times((b.p * rc).sum(1), a.e)
    if isinstance(a, Bias) and isinstance(b, Bias):
        dots = (a.c * b.c).sum(-1, keepdim=True)  # [n or 1, 1]
        return _times(_times(dots, a.e), b.e)
    assert isinstance(a, Attn) and isinstance(b, Attn)
    m = torch.bmm(b.right(), a.right().transpose(1, 2))  # [n, S_b, S_a]
    return (torch.bmm(m, a.p) * b.p).sum(1)


def _layer_norm(shared: SharedImage, terms: List[Term], norm: nn.LayerNorm, name: str) -> List[Term]:
    """``norm`` of the rows of the stream."""
    centred = _map(shared, terms, f"{name}.centre", lambda x: x - x.mean(-1, keepdim=True))
    n_cols = norm.normalized_shape[0]
    var = None
    for i, a in enumerate(centred):
        for j in range(i, len(centred)):
            dot = _rowdot(shared, a, centred[j])
            dot = dot if i == j else 2 * dot
            var = dot if var is None else var + dot
    inv_std = torch.rsqrt(var / n_cols + norm.eps)
    if inv_std.dim() == 1:
        inv_std = inv_std[None]
    scaled: List[Term] = []
    for t in centred:
        if isinstance(t, Shared):
            scaled.append(Shared(t.key, t.s, _scale(t.d, inv_std)))
        elif isinstance(t, Attn):  # the scale goes into the weights: they are read many times
            scaled.append(t.scaled(inv_std))
        else:
            scaled.append(Bias(t.c, _scale(t.e, inv_std)))
    gamma = norm.weight
    out = _map(shared, scaled, f"{name}.gamma", lambda x: x * gamma)
    return _add(shared, out, [Bias(norm.bias[None])])


# ---------------------------------------------------------------------------------------------
# attention with the image stream on one side


def _softmax(logits: Tensor, dim: int) -> Tensor:
    """Softmax with subnormal weights (``< finfo.tiny``, from logits ~87 below the maximum)
    set to 0: every product with a subnormal number costs a microcode assist on x86 CPUs, about
    a hundred times a normal one, and sharp attention makes many of them. The change is below
    1.2e-38 per weight."""
    p = torch.softmax(logits, dim=dim)
    return F.threshold_(p, torch.finfo(p.dtype).tiny, 0.0)


def _by_head(shared: SharedImage, term: Shared, heads: int, channels_last: bool) -> Tensor:
    """The shared matrix ``term.s [F, H * dh]`` split by head, contiguous and memoised:
    ``[H, dh, F]`` (keys / queries of the logits) or, with ``channels_last``, ``[H, F, dh]``
    (values). The strided views of ``s`` make each batched product 2-3x slower (BLAS reads
    16-float pieces of 128-float rows), and every prompt of the image reuses the copy."""
    layout = "hfd" if channels_last else "hdf"
    key = f"{term.key}|{layout}{heads}"

    def make() -> Tensor:
        x = term.s.view(term.s.shape[0], heads, -1)
        return (x.permute(1, 0, 2) if channels_last else x.permute(1, 2, 0)).contiguous()

    return shared.get(key, make)


def _heads(x: Tensor, heads: int) -> Tensor:
    """``[n, T, K]`` -> ``[n, H, T, K / H]``."""
    n, t, k = x.shape
    return x.view(n, t, heads, k // heads).transpose(1, 2)


def _image_logits(shared: SharedImage, terms: List[Term], x: Tensor, constant_rows: bool) -> Tensor:
    """Attention logits between the tokens ``x [n, H, T, dh]`` (already scaled) and the image
    stream ``terms`` split into ``H`` heads: contiguous ``[n, H, T, F]``.

    Prompt by prompt, so each product lands in place: an unscaled shared term is written
    straight into the buffer (no zero fill, no transposed copy for the softmax), the others
    are accumulated into it. ``constant_rows=False`` leaves out unscaled biases, which add the
    same logit to every image token of a row (a softmax over F does not see them).
    """
    n, heads, t, dh = x.shape
    num_f = shared.image.shape[0]
    logits: Optional[Tensor] = None

    def buffer() -> Tensor:
        return logits if logits is not None else x.new_zeros(n, heads, t, num_f)

    # the unscaled shared term (there is at most one after _add) first: it fills the buffer
    for term in sorted(terms, key=lambda term: not (isinstance(term, Shared) and term.d is None)):
        if isinstance(term, Shared):
            s = _by_head(shared, term, heads, channels_last=False)  # [H, dh, F]
            if logits is None and term.d is None:
                logits = x.new_empty(n, heads, t, num_f)
                for i in range(n):
                    torch.bmm(x[i], s, out=logits[i])
                continue
            logits = buffer()
            for i in range(n):
                part = torch.bmm(x[i], s)  # [H, T, F]
                if term.d is None:
                    logits[i].add_(part)
                else:
                    logits[i].addcmul_(part, term.d[i])
        elif isinstance(term, Attn):
            logits = buffer()
            r = term.right().view(n, -1, heads, dh)  # [n, S, H, dh]
            z = torch.einsum("nhtj,nshj->nhts", x, r).reshape(n, heads * t, -1)
            logits.view(n, heads * t, -1).baddbmm_(z, term.p)
        elif term.e is not None or constant_rows:
            logits = buffer()
            cx = (x * term.c.view(-1, 1, heads, dh).transpose(1, 2)).sum(-1, keepdim=True)  # [n, H, T, 1]
            if term.e is None:
                logits.add_(cx)
            else:
                logits.addcmul_(cx, term.e[:, None, None, :])
    return buffer()


def _tokens_to_image(
    shared: SharedImage, attn: nn.Module, queries: Tensor, keys: List[Term], values: List[Term], name: str
) -> Tensor:
    """``attn(q=queries, k=keys, v=values)`` for tokens ``[n, T, C]`` attending to the image
    stream; returns ``[n, T, C]``."""
    heads = attn.num_heads
    q = _heads(attn.q_proj(queries), heads)  # [n, H, T, dh]
    n, _, t, dh = q.shape
    q = q * dh**-0.5
    k_terms = _linear(shared, keys, attn.k_proj, f"{name}.k")
    # (an unscaled bias is the same logit for every image token: the softmax over F ignores it)
    logits = _image_logits(shared, k_terms, q, constant_rows=False)
    weights = _softmax(logits, dim=-1)  # [n, H, T, F]
    out = None
    for term in _linear(shared, values, attn.v_proj, f"{name}.v"):
        if isinstance(term, Shared):
            s = _by_head(shared, term, heads, channels_last=True)  # [H, F, dh]
            part = torch.stack([  # prompt by prompt: [H, T, F] @ [H, F, dh], no transposed copy
                torch.bmm(weights[i] if term.d is None else weights[i] * term.d[i], s) for i in range(n)
            ])
        elif isinstance(term, Attn):
            ws = torch.bmm(weights.reshape(n, heads * t, -1), term.p.transpose(1, 2))
            ws = ws.view(n, heads, t, -1)
            r = term.right().view(n, -1, heads, dh)
            part = torch.einsum("nhts,nshj->nhtj", ws, r)
        else:
            c = term.c.view(-1, 1, heads, dh).transpose(1, 2)  # [n or 1, H, 1, dh]
            part = c if term.e is None else (weights @ term.e[:, None, :, None]) * c
        out = part if out is None else out + part
    out = out.expand(n, heads, t, dh).transpose(1, 2).reshape(n, t, heads * dh)
    return attn.out_proj(out)


def _image_to_tokens(
    shared: SharedImage, attn: nn.Module, queries: List[Term], keys: Tensor, values: Tensor, name: str
) -> List[Term]:
    """``attn(q=queries, k=keys, v=values)`` for the image stream attending to tokens
    ``[n, T, C]``; returns the result as terms."""
    heads = attn.num_heads
    k = _heads(attn.k_proj(keys), heads)  # [n, H, T, dh]
    v = _heads(attn.v_proj(values), heads)
    n, _, t, dh = k.shape
    k = k * dh**-0.5
    q_terms = _linear(shared, queries, attn.q_proj, f"{name}.q")
    logits = _image_logits(shared, q_terms, k, constant_rows=True)  # the softmax runs over T
    p = _softmax(logits, dim=2).reshape(n, heads * t, -1)  # [n, H * T, F]
    g = attn.out_proj.weight.t()  # [H * dh, C]
    return [Attn(f"{name}.out", p, v, g), Bias(attn.out_proj.bias[None])]


# ---------------------------------------------------------------------------------------------
# decoder


def _two_way_transformer(
    shared: SharedImage, transformer: nn.Module, point_embedding: Tensor
) -> Tuple[Tensor, List[Term]]:
    """:meth:`TwoWayTransformer.forward` with the image stream as terms."""
    pe = [Shared("pe", shared.pe)]
    keys: List[Term] = [Shared("image", shared.image)]
    queries = point_embedding
    for i, layer in enumerate(transformer.layers):
        name = f"layer{i}"
        queries = layer.token_self_attention(queries, point_embedding)
        k = _add(shared, keys, pe)
        q = queries + point_embedding
        queries = layer.norm2(
            queries + _tokens_to_image(shared, layer.cross_attn_token_to_image, q, k, keys, f"{name}.t2i")
        )
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + point_embedding
        update = _image_to_tokens(shared, layer.cross_attn_image_to_token, k, q, queries, f"{name}.i2t")
        keys = _layer_norm(shared, _add(shared, keys, update), layer.norm4, f"{name}.norm4")
    q = queries + point_embedding
    k = _add(shared, keys, pe)
    attn_out = _tokens_to_image(shared, transformer.final_attn_token_to_image, q, k, keys, "final.t2i")
    queries = transformer.norm_final_attn(queries + attn_out)
    return queries, keys


#: image tokens per tile of the upscaler: its intermediates for one tile (256 KB - 2 MB) stay
#: in a core's L2 cache through all the passes of LayerNorm, GELU and the second convolution
UPSCALE_TILE = 512


def _upscale_masks(
    shared: SharedImage, decoder: nn.Module, src: List[Term], hyper_in: Tensor, rows: Tensor
) -> Tensor:
    """``hyper_in [n, M, C/8]`` times the upscaled image stream of the prompts ``rows`` ->
    mask logits ``[len(rows), M, 4h, 4w]``, one prompt and one tile of image tokens at a
    time."""
    dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
    c_in, c1 = dc1.weight.shape[:2]
    c2 = dc2.weight.shape[1]
    h, w = shared.h, shared.w
    num_f = h * w
    # a 2x2 stride-2 transposed convolution is a per-pixel linear map to (i, j, c_out)
    w1 = dc1.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c1)
    w2 = dc2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
    terms = _map(shared, src, "dc1", lambda x: x @ w1)
    # the convolutions' biases plus the high-res features, [F, 4 * c1] and [F * 4, 4 * c2]
    bias1 = shared.get("dc1.bias+s1", lambda: (
        dc1.bias.repeat(4).expand(num_f, -1)
        + (0 if shared.feat_s1 is None else shared.feat_s1.reshape(num_f, 4 * c1))
    ).contiguous())
    bias2 = shared.get("dc2.bias+s0", lambda: (
        dc2.bias.repeat(4).expand(num_f * 4, -1)
        + (0 if shared.feat_s0 is None else shared.feat_s0.reshape(num_f * 4, 4 * c2))
    ).contiguous())
    n = len(rows)
    # per prompt, everything but the shared matrices as one product: [F, K] @ [K, 4 * c1]
    # (attention weights; a scaled bias is a rank-1 column)
    left, right = [], []
    scaled_shared = [
        Shared(t.key, t.s, None if t.d is None else t.d[rows]) for t in terms if isinstance(t, Shared)
    ]
    for t in terms:
        if isinstance(t, Attn):
            left.append(t.p[rows])
            right.append(Attn(t.key, t.p[:0], t.v[rows], t.g).right())
        elif isinstance(t, Bias):
            e = hyper_in.new_ones(n, num_f) if t.e is None else t.e[rows]
            left.append(e[:, None, :])
            right.append((t.c if t.c.shape[0] == 1 else t.c[rows]).expand(n, -1)[:, None, :])
    left_t = torch.cat(left, dim=1)  # [n, K, F]
    right_t = torch.cat(right, dim=1)  # [n, K, 4 * c1]
    return upscale_op(Upscale(bias1, left_t, right_t, scaled_shared, ln1, act1, act2, w2, bias2, h), hyper_in[rows])


@dataclass
class Upscale:
    """What the per-prompt upscaler needs besides the hypernetwork outputs: the first
    convolution's per-token base ``bias1 [F, 4 * c1]`` and low-rank terms ``left [n, K, F]``
    ``right [n, K, 4 * c1]``, its row-scaled shared terms, the LayerNorm and activations, the
    second convolution ``w2 [c1, 4 * c2]`` with ``bias2 [4F, 4 * c2]``, and the token rows
    ``height``."""

    bias1: Tensor
    left: Tensor
    right: Tensor
    scaled_shared: List[Shared]
    ln1: nn.LayerNorm
    act1: nn.Module
    act2: nn.Module
    w2: Tensor
    bias2: Tensor
    height: int

    @property
    def exact_gelu(self) -> bool:
        return all(isinstance(a, nn.GELU) and a.approximate == "none" for a in (self.act1, self.act2))


def _upscale_tiles(u: Upscale, hyper: Tensor, tile: int) -> Tensor:
    """``hyper [n, M, C/8]`` -> mask logits ``[n, M, 4h, 4w]`` in torch, one prompt and one tile
    of ``tile`` image tokens at a time (the tile's intermediates stay in the caches)."""
    num_f, width1 = u.bias1.shape
    c1, c2 = u.ln1.weight.shape[0], u.w2.shape[1] // 4
    n, m = hyper.shape[:2]
    h, w = u.height, num_f // u.height
    exact_gelu = u.exact_gelu
    out = hyper.new_empty(n, num_f * 16, m)
    for i in range(n):
        hyper_t = hyper[i].t()
        for r0 in range(0, num_f, tile):
            r1 = min(num_f, r0 + tile)
            y = torch.addmm(u.bias1[r0:r1], u.left[i, :, r0:r1].t(), u.right[i])  # [tile, 4 * c1]
            for t in u.scaled_shared:
                if t.d is None:
                    y.add_(t.s[r0:r1])
                else:
                    y.addcmul_(t.d[i, r0:r1, None], t.s[r0:r1])
            y = F.layer_norm(y.view(-1, c1), (c1,), u.ln1.weight, u.ln1.bias, u.ln1.eps)
            y = torch.ops.aten.gelu_(y) if exact_gelu else u.act1(y)
            y = torch.addmm(u.bias2[4 * r0 : 4 * r1], y, u.w2)  # [tile * 4, 4 * c2]
            y = torch.ops.aten.gelu_(y) if exact_gelu else u.act2(y)
            torch.mm(y.view(-1, c2), hyper_t, out=out[i, 16 * r0 : 16 * r1])
    # pixel (y, x, i, j, i2, j2) -> (4y + 2i + i2, 4x + 2j + j2)
    out = out.view(n, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
    return out.reshape(n, m, 4 * h, 4 * w)


def _fake_upscale_masks(base, left, right, shared, scales, ln_weight, ln_bias, eps, w2, bias2, hyper,
                        height, tile):
    n, m = hyper.shape[:2]
    return base.new_empty(n, m, 4 * height, 4 * (base.shape[0] // height))


register_fake_on_load("sam2_fast::upscale_masks", _fake_upscale_masks)


def _cpp_refusal(u: Upscale, hyper: Tensor, tile: int = 0) -> Optional[str]:
    """Why ``torch.ops.sam2_fast.upscale_masks`` (csrc/ops.cpp) cannot run the upscaler:
    it takes float32 on the CPU, no autograd, the exact GELU, and an extension that has it."""
    if hyper.device.type != "cpu" or hyper.dtype != torch.float32:
        return f"hyper is {hyper.dtype} on {hyper.device.type}; the C++ upscaler runs float32 on cpu"
    if torch.is_grad_enabled():
        return "autograd: the torch tiles are differentiable"
    if not u.exact_gelu:
        return "the C++ upscaler computes the exact GELU only"
    from sam2_fast._ext import load_extension

    ext, reason = load_extension()
    if ext is None:
        return f"extension {reason}"
    if not hasattr(torch.ops.sam2_fast, "upscale_masks"):
        return "the extension has no upscale_masks op (built from older sources)"
    return None


def _upscale_cpp(u: Upscale, hyper: Tensor, tile: int) -> Tensor:
    """The per-prompt loop of :func:`_upscale_tiles` in one C++ call, (prompt, tile) tasks in
    parallel, each writing its pixels of the mask logits ``[n, M, 4h, 4w]``."""
    base = u.bias1
    fixed = [t.s for t in u.scaled_shared if t.d is None]
    if fixed:
        base = u.bias1 + torch.stack(fixed).sum(0)
    scaled = [t for t in u.scaled_shared if t.d is not None]
    num_f, width = u.bias1.shape
    n = hyper.shape[0]
    shared = torch.stack([t.s for t in scaled]) if scaled else u.bias1.new_empty(0, num_f, width)
    scales = torch.stack([t.d for t in scaled], 1) if scaled else u.bias1.new_empty(n, 0, num_f)
    return torch.ops.sam2_fast.upscale_masks(
        base.contiguous(), u.left.contiguous(), u.right.contiguous(), shared.contiguous(),
        scales.contiguous(), u.ln1.weight, u.ln1.bias, u.ln1.eps, u.w2.contiguous(), u.bias2,
        hyper.contiguous(), u.height, tile,
    )


def _upscale_shape_class(u: Upscale, hyper: Tensor) -> str:
    dtype = str(hyper.dtype).removeprefix("torch.")
    return (f"{dtype} prompts {size_class(hyper.shape[0])} x {hyper.shape[1]} masks, "
            f"{u.bias1.shape[0]} tokens, rank {u.left.shape[1]}")


def _upscale_example(device: str) -> tuple:
    """One click on sam2.1-tiny at 1024: 64 x 64 image tokens, 4 masks, rank-40 prompt terms."""
    with torch.device(device):
        c1, c2, num_f = 64, 32, 64 * 64
        u = Upscale(torch.zeros(num_f, 4 * c1), torch.zeros(1, 40, num_f), torch.zeros(1, 40, 4 * c1),
                    [], nn.LayerNorm(c1), nn.GELU(), nn.GELU(), torch.zeros(c1, 4 * c2),
                    torch.zeros(4 * num_f, 4 * c2), 64)
        return u, torch.zeros(1, 4, c2)


#: image tokens per tile of the upscaler, by backend: a tile's intermediates (256 KB - 2 MB at
#: 512) stay in a core's L2 cache through LayerNorm, GELU and the second convolution; the
#: tuner compares the sizes
UPSCALE_TILES = {"cpp": UPSCALE_TILE, "cpp_tile256": 256, "cpp_tile1024": 1024}

def _tile_preference(tile: int):
    def preference(u: Upscale, hyper: Tensor) -> Optional[str]:
        return None if tile == UPSCALE_TILE else f"the built-in default tile is {UPSCALE_TILE} tokens"

    return preference


upscale_op = Op("upscale_masks", example=_upscale_example, shape_class=_upscale_shape_class, kind="model")
for _name, _tile in UPSCALE_TILES.items():
    upscale_op.add_backend(_name, functools.partial(_upscale_cpp, tile=_tile), _cpp_refusal, _tile_preference(_tile))
upscale_op.add_backend("reference", lambda u, hyper: _upscale_tiles(u, hyper, UPSCALE_TILE))  # torch tiles


#: prompts through the transformer together (the upscaler takes them one by one): the
#: per-prompt intermediates are ~1 MB each, so a few prompts at a time stay in cache (measured
#: on a 2-core Xeon: 8 at a time ~3 % faster than 4, 64 at a time ~1.5x slower)
PROMPTS_PER_PASS = 8


def predict_masks_shared_image(
    decoder: nn.Module,
    shared: SharedImage,
    sparse_prompt_embeddings: Tensor,
    masks_needed: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """:meth:`MaskDecoder.predict_masks` for ``n`` prompts ``[n, T_s, C]`` on ``shared``.

    ``masks_needed``: given the IoU predictions ``[k, num_mask_tokens]`` of ``k`` prompts,
    which of them (bool ``[k]``) need mask logits; the others' masks are not computed (the
    upscaling is half of the decoder's work) and come back as NaN.
    """
    n = sparse_prompt_embeddings.shape[0]
    parts = [
        _predict_masks(decoder, shared, sparse_prompt_embeddings[s : s + PROMPTS_PER_PASS], masks_needed)
        for s in range(0, n, PROMPTS_PER_PASS)
    ]
    if len(parts) == 1:
        return parts[0]
    return tuple(torch.cat(outs) for outs in zip(*parts))


def _predict_masks(
    decoder: nn.Module,
    shared: SharedImage,
    sparse_prompt_embeddings: Tensor,
    masks_needed: Optional[Callable[[Tensor], Tensor]],
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    s = 0
    if decoder.pred_obj_scores:
        weights.insert(0, decoder.obj_score_token.weight)
        s = 1
    n = sparse_prompt_embeddings.shape[0]
    output_tokens = torch.cat(weights, dim=0).unsqueeze(0).expand(n, -1, -1)
    tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

    hs, src = _two_way_transformer(shared, decoder.transformer, tokens)
    iou_token_out = hs[:, s, :]
    mask_tokens_out = hs[:, s + 1 : s + 1 + decoder.num_mask_tokens, :]
    iou_pred, object_score_logits = score_heads(decoder, iou_token_out, hs[:, 0, :])
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)],
        dim=1,
    )
    h, w = shared.h, shared.w
    if masks_needed is None:
        masks = _upscale_masks(shared, decoder, src, hyper_in, torch.arange(n))
    else:
        rows = masks_needed(iou_pred).nonzero().flatten().cpu()
        masks = hyper_in.new_full((n, hyper_in.shape[1], 4 * h, 4 * w), float("nan"))
        if len(rows):
            masks[rows.to(masks.device)] = _upscale_masks(shared, decoder, src, hyper_in, rows)
    return masks, iou_pred, mask_tokens_out, object_score_logits


def score_heads(decoder: nn.Module, iou_token_out: torch.Tensor, object_token: torch.Tensor):
    """``(iou_pred, object_score_logits)``, always in float32, also under autocast: they
    rank the multimask outputs and gate objects in and out, so 16-bit rounding there would
    change which mask is returned rather than its pixels."""
    with torch.autocast(iou_token_out.device.type, enabled=False):
        iou_pred = decoder.iou_prediction_head(iou_token_out.float())
        if decoder.pred_obj_scores:
            object_score_logits = decoder.pred_obj_score_head(object_token.float())
        else:
            # no presence head: assume the object is present (sigmoid(10) ~ 1)
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)
    return iou_pred, object_score_logits
