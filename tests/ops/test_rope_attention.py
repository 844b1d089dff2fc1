"""rope_attention: every backend against an independent re-implementation (complex-number RoPE as
in the official code, explicit softmax), and the memory attention's folded values against the
module math."""

from __future__ import annotations

import math

import pytest
import torch

from sam2_fast.modeling.position_encoding import axial_rope_cos_sin
from sam2_fast.ops import BackendError, rope_attention, use_backend
from sam2_fast.ops.rope_attention import rope_attention_op

# max |error| relative to max |reference| per input dtype (float32 accumulation everywhere; the
# 16-bit inputs round the rotated q / k and the probabilities to 8 / 11 mantissa bits)
TOLERANCE = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}


def _official_style(q, k, v, side, num_exclude, theta=10000.0):
    """Complex RoPE as in official ``apply_rotary_enc`` (float64 here), explicit softmax."""
    d = q.shape[-1]
    freqs = 1.0 / (theta ** (torch.arange(0, d, 4)[: d // 4].double() / d))
    t = torch.arange(side * side)
    tx, ty = (t % side).double(), torch.div(t, side, rounding_mode="floor").double()
    angles = torch.cat([torch.outer(tx, freqs), torch.outer(ty, freqs)], dim=-1)
    rot = torch.polar(torch.ones_like(angles), angles)

    def rotate(x, reps):
        xc = torch.view_as_complex(x.double().reshape(*x.shape[:-1], x.shape[-1] // 2, 2))
        return torch.view_as_real(xc * rot.repeat(reps, 1)).flatten(-2)

    nk_rope = k.shape[2] - num_exclude
    qr = rotate(q, 1)
    kr = torch.cat([rotate(k[:, :, :nk_rope], nk_rope // (side * side)), k[:, :, nk_rope:].double()], dim=2)
    scores = qr @ kr.transpose(-1, -2) / math.sqrt(d)
    return torch.softmax(scores, dim=-1) @ v.double().expand(-1, q.shape[1], -1, -1)


def _inputs(b=2, h=1, side=4, d=32, frames=3, num_exclude=4, dv=16, shared_v=True, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    nq = side * side
    nk = frames * nq + num_exclude
    q = torch.randn(b, h, nq, d, generator=g)
    k = torch.randn(b, h, nk, d, generator=g)
    v = torch.randn(b, 1 if shared_v else h, nk, dv, generator=g)
    cos, sin = axial_rope_cos_sin(d, side, side, 10000.0)
    return [x.to(dtype) for x in (q, k, v)] + [cos, sin]


CASES = {
    "cross-attention, shared narrow values": dict(),
    "self-attention (one frame, nothing excluded)": dict(frames=1, num_exclude=0, dv=32),
    "several heads, per-head values": dict(h=2, shared_v=False),
    "non-power-of-two grid and widths": dict(side=3, d=24, dv=12, num_exclude=3),
    "7 memory frames, one object": dict(b=1, frames=7, num_exclude=8),
    "only object pointers": dict(frames=0, num_exclude=5),
}


def _cpp_refusal(dtype=torch.float32):
    q, k, v, cos, sin = _inputs(dtype=dtype)
    return rope_attention_op.backend("cpp").supports(q, k, v, cos, sin, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("backend", ["reference", "blocked", "cpp"])
@pytest.mark.parametrize("case", list(CASES))
def test_backends_match_official_math(case, backend, dtype):
    q, k, v, cos, sin = _inputs(dtype=dtype, **CASES[case])
    n_exclude = CASES[case].get("num_exclude", 4)
    side = CASES[case].get("side", 4)
    expected = _official_style(q, k, v, side, n_exclude)
    if backend == "cpp" and _cpp_refusal(dtype) is not None:
        # a CPU without AVX-512 / a micro-kernel: the refusal is explained, never run
        assert rope_attention_op.explain(q, k, v, cos, sin, n_exclude)["cpp"] == _cpp_refusal(dtype)
        assert rope_attention_op.select(q, k, v, cos, sin, n_exclude).name != "cpp"
        return
    with use_backend(backend, op="rope_attention"):
        out = rope_attention(q, k, v, cos, sin, n_exclude)
    assert out.dtype == q.dtype and out.shape == expected.shape
    err = (out.double() - expected).abs().max() / expected.abs().max()
    assert err < TOLERANCE[dtype], err


def test_blocked_runs_several_query_blocks(monkeypatch):
    """Blocks of 16 queries over a 64-query grid: every block sees every key."""
    from sam2_fast.ops import _blocked

    monkeypatch.setattr(_blocked, "BLOCK_BYTES", 1)
    q, k, v, cos, sin = _inputs(side=8, frames=2, h=2, shared_v=False)
    expected = _official_style(q, k, v, 8, 4)
    assert _blocked.block_rows(k.shape[2], 4, q.shape[2]) == 16
    with use_backend("blocked", op="rope_attention"):
        out = rope_attention(q, k, v, cos, sin, 4)
    assert (out.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[torch.float32]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", list(CASES))
def test_triton_interpreter(case, dtype, triton_interpreter):
    triton_interpreter("sam2_fast.kernels.rope_attention")
    q, k, v, cos, sin = _inputs(dtype=dtype, **CASES[case])
    n_exclude = CASES[case].get("num_exclude", 4)
    side = CASES[case].get("side", 4)
    expected = _official_style(q, k, v, side, n_exclude)
    assert rope_attention_op.select(q, k, v, cos, sin, n_exclude).name == "triton"
    out = rope_attention(q, k, v, cos, sin, n_exclude)
    assert out.dtype == dtype
    err = (out.double() - expected).abs().max() / expected.abs().max()
    assert err < TOLERANCE[dtype], err


def test_triton_interpreter_non_contiguous_inputs(triton_interpreter):
    triton_interpreter("sam2_fast.kernels.rope_attention")
    q, k, v, cos, sin = _inputs(h=2, shared_v=False)
    # head-major storage read through strides, as produced by _separate_heads
    q2, k2, v2 = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert not q2.is_contiguous()
    expected = _official_style(q, k, v, 4, 4)
    out = rope_attention(q2, k2, v2, cos, sin, 4)
    assert (out.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[torch.float32]


def test_cpu_default_is_cpp_else_blocked_and_float16_goes_to_the_reference():
    q, k, v, cos, sin = _inputs()
    default = "cpp" if _cpp_refusal() is None else "blocked"
    assert rope_attention_op.select(q, k, v, cos, sin, 4).name == default
    default = "cpp" if _cpp_refusal(torch.bfloat16) is None else "blocked"
    assert rope_attention_op.select(q.bfloat16(), k.bfloat16(), v.bfloat16(), cos, sin, 4).name == default
    verdicts = rope_attention_op.explain(q.half(), k.half(), v.half(), cos, sin, 4)
    assert "float16" in verdicts["blocked"] and "float16" in verdicts["cpp"]
    assert verdicts["reference"] is None


needs_cpp = pytest.mark.skipif(
    _cpp_refusal() is not None or _cpp_refusal(torch.bfloat16) is not None,
    reason="the C++ flash attention cannot run on this CPU (test_backends_match_official_math "
    "checks that its refusal is explained)",
)


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_block, kv_block", [(16, 16), (16, 32), (48, 16), (256, 512)])
@pytest.mark.parametrize("case", ["cross-attention, shared narrow values", "several heads, per-head values",
                                  "non-power-of-two grid and widths", "7 memory frames, one object"])
def test_cpp_blocks_padding_and_thread_modes(case, q_block, kv_block, dtype):
    """Every block size the kernel may take: several query and key blocks, a last key block of
    odd length (padded with weightless zero keys), groups laid out once and shared by the
    threads (many query blocks) or each by its own thread (few)."""
    q, k, v, cos, sin = _inputs(dtype=dtype, **{**CASES[case], "side": 8} if case != "non-power-of-two grid and widths" else CASES[case])
    side = math.isqrt(q.shape[2])
    n_exclude = CASES[case].get("num_exclude", 4)
    expected = _official_style(q, k, v, side, n_exclude)
    out = torch.ops.sam2_fast.flash_attention(q, k, v, cos, sin, k.shape[2] - n_exclude, 1 / math.sqrt(q.shape[-1]),
                                              q_block, kv_block)
    assert out.dtype == dtype and out.shape == expected.shape
    assert (out.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[dtype]


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("jump", [-200.0, 10.0, 30.0, 60.0, 200.0])
def test_cpp_rescales_when_later_keys_score_far_higher(jump, dtype):
    """After a row's first key block the kernel exponentiates against the running maximum and
    re-takes it only when a block's scores rise more than 2^32 above it: every score of the keys
    after the first block shifted by `jump` (natural-log units; one channel, constant in the
    queries, carries it), up or down, gives the same attention."""
    q, k, v, cos, sin = _inputs(b=1, side=8, frames=3, num_exclude=4, dtype=torch.float32)
    scale = 1 / math.sqrt(q.shape[-1])
    q[..., 0] = 1.0
    k[..., 0] = 0.0
    k[:, :, 16:-4, 0] = jump / scale  # keys 16.. (after the first block of 16), not the last 4
    q, k, v = (x.to(dtype) for x in (q, k, v))
    out = torch.ops.sam2_fast.flash_attention(q, k, v, None, None, 0, scale, 16, 16)
    expected = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=scale)
    assert torch.isfinite(out).all()
    # a float32 score of size |jump| is itself rounded by about |jump| 2^-24: weights that far
    # apart cannot be closer than that in any float32 attention
    tolerance = TOLERANCE[dtype] + abs(jump) * 2.0**-21
    assert (out.double() - expected).abs().max() / expected.abs().max() < tolerance


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_reads_strided_inputs_and_plain_attention(dtype):
    """Head-major storage read through strides (as _separate_heads makes it), and attention
    without rotation (no cos / sin) against SDPA."""
    q, k, v, cos, sin = _inputs(h=2, shared_v=False, dtype=dtype)
    q2, k2, v2 = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (q, k, v))
    assert not q2.is_contiguous()
    expected = _official_style(q, k, v, 4, 4)
    with use_backend("cpp", op="rope_attention"):
        out = rope_attention(q2, k2, v2, cos, sin, 4)
    assert (out.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[dtype]
    plain = torch.ops.sam2_fast.flash_attention(q2, k2, v2, None, None, 0, 0.3, 16, 16)
    expected = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=0.3)
    assert (plain.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[dtype]


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d, dv", [(6, 5), (34, 33), (96, 96), (98, 70), (256, 64)])
def test_cpp_layout_passes_any_width(d, dv, dtype):
    """The vectorised layout passes (keys transposed 16 x 16 words at a time, value rows
    interleaved 32 channels at a time, output rows rounded 16 at a time) for head widths that
    fill no, one or several vectors and leave partial ones: an odd key count (the last block
    padded), values read through a row stride wider than their channels, against SDPA in
    float64."""
    g = torch.Generator().manual_seed(d + dv)
    q = torch.randn(2, 3, 40, d, generator=g).to(dtype)
    k = torch.randn(2, 3, 77, d, generator=g).to(dtype)
    v = torch.randn(2, 3, 77, dv + 9, generator=g).to(dtype)[..., 3 : 3 + dv]
    assert v.stride(2) == dv + 9
    out = torch.ops.sam2_fast.flash_attention(q, k, v, None, None, 0, d**-0.5, 16, 32)
    expected = torch.nn.functional.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert out.dtype == dtype and out.shape == expected.shape
    assert (out.double() - expected).abs().max() / expected.abs().max() < TOLERANCE[dtype]


@needs_cpp
def test_cpp_rotation_rounds_as_apply_rope():
    """float32: the fused rotation gives the reference's numbers to float32 rounding."""
    q, k, v, cos, sin = _inputs(side=8, frames=2, num_exclude=3)
    with use_backend("reference", op="rope_attention"):
        expected = rope_attention(q, k, v, cos, sin, 3)
    with use_backend("cpp", op="rope_attention"):
        out = rope_attention(q, k, v, cos, sin, 3)
    assert (out - expected).abs().max() <= 1e-6 * expected.abs().max()


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpp_fused_rotation_equals_rotating_first(dtype):
    """The rotation fused into the layout passes gives apply_rope's numbers: bfloat16 inputs
    the same attention, bit for bit, as the kernel run without rotation on inputs rotated
    beforehand; float32 within an ulp of the rotation (aten's addcmul may fuse its
    multiply-add, the kernel rounds each product)."""
    from sam2_fast.modeling.position_encoding import apply_rope

    q, k, v, cos, sin = _inputs(side=8, frames=3, num_exclude=5, d=40, dv=24, dtype=dtype)
    n_rope = k.shape[2] - 5
    q_rot = apply_rope(q, cos, sin)
    k_rot = torch.cat([apply_rope(k[:, :, :n_rope].unflatten(2, (-1, 64)), cos, sin).flatten(2, 3), k[:, :, n_rope:]], 2)
    fused = torch.ops.sam2_fast.flash_attention(q, k, v, cos, sin, n_rope, 0.3, 16, 32)
    first = torch.ops.sam2_fast.flash_attention(q_rot, k_rot, v, None, None, 0, 0.3, 16, 32)
    if dtype == torch.bfloat16:
        assert torch.equal(fused, first)
    else:
        assert (fused - first).abs().max() <= 1e-6 * first.abs().max()


@needs_cpp
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda q, k, v, c, s: (q[0], k, v, c, s, 48, 0.2), r"q, k and v must be \[B, heads, tokens, dim\]"),
        (lambda q, k, v, c, s: (q, k.bfloat16(), v, c, s, 48, 0.2), "q, k and v must have one dtype"),
        (lambda q, k, v, c, s: (q.half(), k.half(), v.half(), c, s, 48, 0.2), "must be float32 or bfloat16"),
        (lambda q, k, v, c, s: (q, k[..., :16], v, c, s, 48, 0.2), r"k must be \[2, 1, Nk, 32\]"),
        (lambda q, k, v, c, s: (q, k, v[:, :, :-1], c, s, 48, 0.2), "v must be"),
        (lambda q, k, v, c, s: (q, k, v, c[:-1], s[:-1], 48, 0.2), r"cos and sin must be \[16, 16\]"),
        (lambda q, k, v, c, s: (q, k, v, c.double(), s.double(), 48, 0.2), "cos and sin must be float32"),
        (lambda q, k, v, c, s: (q, k, v, c, None, 48, 0.2), "cos and sin must be given together"),
        (lambda q, k, v, c, s: (q, k, v, c, s, 40, 0.2), "num_k_rope must be a multiple of the 16 queries"),
        (lambda q, k, v, c, s: (q, k, v, c, s, 48, 0.2, 8, 512), "q_block must be >= 16"),
        (lambda q, k, v, c, s: (q[..., :31], k[..., :31], v, None, None, 0, 0.2), "D even"),
    ],
)
def test_cpp_bad_input_names_the_argument(call, match):
    q, k, v, cos, sin = _inputs()
    with pytest.raises((ValueError, TypeError), match=match):
        torch.ops.sam2_fast.flash_attention(*call(q, k, v, cos, sin))
    # the op stays usable
    assert torch.ops.sam2_fast.flash_attention(q, k, v, cos, sin, 48, 0.2).shape == (2, 1, 16, 16)


def test_forced_backend_that_refuses_raises():
    q, k, v, cos, sin = _inputs()
    with use_backend("triton", op="rope_attention"), pytest.raises(BackendError, match="triton.*cannot run"):
        rope_attention(q, k, v, cos, sin, 4)


@pytest.mark.parametrize(
    "mutate, error, match",
    [
        (lambda a: a.__setitem__(0, a[0][0]), ValueError, r"q must be \[B, heads, tokens, dim\]"),
        (lambda a: a.__setitem__(0, a[0].long()), TypeError, "q must be float32, bfloat16 or float16"),
        (lambda a: a.__setitem__(1, a[1].double()), TypeError, "q must be float32|k must be float32"),
        (lambda a: a.__setitem__(1, a[1][..., :16]), ValueError, r"k must be \[2, 1, Nk, 32\]"),
        (lambda a: a.__setitem__(2, a[2][:, :, :-1]), ValueError, "v must be"),
        (lambda a: a.__setitem__(3, a[3][:-1]), ValueError, r"cos and sin must be \[16, 16\]"),
        (lambda a: a.__setitem__(3, a[3].double()), TypeError, "cos and sin must be float32"),
        (lambda a: a.__setitem__(5, 3), ValueError, "must be a multiple of the queries"),
        (lambda a: a.__setitem__(5, -1), ValueError, "num_k_exclude_rope must be an int"),
        (lambda a: a.__setitem__(0, "q"), TypeError, "q must be a torch.Tensor"),
        (lambda a: (a.__setitem__(0, a[0][:, :, :0]), a.__setitem__(3, a[3][:0]), a.__setitem__(4, a[4][:0])),
         ValueError, "q has no query tokens"),
    ],
)
def test_bad_input(mutate, error, match):
    args = [*_inputs(), 4]
    mutate(args)
    with pytest.raises(error, match=match):
        rope_attention(*args)


def test_autograd_uses_the_differentiable_reference():
    q, k, v, cos, sin = _inputs()
    q.requires_grad_(True)
    rope_attention(q, k, v, cos, sin, 4).sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_memory_attention_value_fold_matches_unfolded_module():
    """RoPEAttention with 64-dim memories (values folded into the output projection) equals
    v_proj -> attention -> out_proj computed the plain way."""
    import torch.nn.functional as F

    from sam2_fast.modeling.transformer import RoPEAttention

    torch.manual_seed(0)
    attn = RoPEAttention(64, 2, kv_in_dim=16, rope_k_repeat=True, feat_sizes=(4, 4)).eval()
    q_in, mem = torch.randn(2, 16, 64), torch.randn(2, 3 * 16 + 4, 16)
    with torch.no_grad():
        out = attn(q_in, mem, mem, num_k_exclude_rope=4)
        q = attn._separate_heads(attn.q_proj(q_in))
        k = attn._separate_heads(attn.k_proj(mem))
        v = attn._separate_heads(attn.v_proj(mem))
        cos, sin = attn.rope_tables(16, q.device)
        from sam2_fast.ops.rope_attention import rope_attention_reference

        plain = attn.out_proj(attn._recombine_heads(rope_attention_reference(q, k, v, cos, sin, 4)))
    assert torch.allclose(out, plain, atol=1e-5, rtol=1e-5)
    assert not torch.equal(out, F.linear(q_in, torch.zeros(64, 64)))  # a real output


def test_compiled_is_only_used_when_forced():
    names = rope_attention_op.backend_names
    assert names.index("compiled") > names.index("reference")


def test_triton_is_passed_over_on_gpu_but_not_in_the_interpreter():
    """The kernel before the redesign measured 3-16x slower than RoPE + SDPA on an H200
    (bench/gpu/README.md); the redesigned one waits for a GPU measurement."""
    from types import SimpleNamespace

    from sam2_fast.ops.rope_attention import _triton_preference

    reason = _triton_preference(SimpleNamespace(device=torch.device("cuda")))
    assert "not measured on a GPU" in reason and "run.sh rope" in reason
    assert _triton_preference(SimpleNamespace(device=torch.device("cpu"))) is None


# ---------------------------------------------------------------------------------------------
# the Triton kernels' parts: rotation pass, key splits and their merge, tile choices


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_rotation_pass_is_rope_with_channels_de_interleaved(dtype, triton_interpreter):
    kernels = triton_interpreter("sam2_fast.kernels.rope_attention")
    from sam2_fast.ops.rope_attention import rotate_tokens

    q, k, v, cos, sin = _inputs(h=2, shared_v=False, dtype=dtype)
    k = k.transpose(1, 2).contiguous().transpose(1, 2)  # read through strides
    n_rope = k.shape[2] - 4
    out = kernels.rotate(k, cos, sin, n_rope, 0.5)
    expected = rotate_tokens(k.float(), cos, sin, 4) * 0.5
    order = torch.cat([torch.arange(0, 32, 2), torch.arange(1, 32, 2)])  # evens, then odds
    assert out.shape == (2 * 2, k.shape[2], 32) and out.dtype == dtype and out.is_contiguous()
    # rotated in float32 (the reference fuses a multiply-add, so ~1 ulp apart), rounded once
    tol = {torch.float32: 1e-6, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(out.float(), expected.flatten(0, 1)[..., order].to(dtype).float(), atol=tol, rtol=tol)
    assert not torch.equal(out[:, :n_rope].float(), k.flatten(0, 1)[:, :n_rope, order].float())  # really rotated


@pytest.mark.parametrize("splits", [2, 3, 50])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["cross-attention, shared narrow values", "several heads, per-head values",
                                  "non-power-of-two grid and widths", "7 memory frames, one object"])
def test_triton_key_splits_merge_to_the_same_attention(case, dtype, splits, triton_interpreter):
    """Keys cut into contiguous splits (the last one shorter, more splits asked than key tiles
    exist), partials merged by the combine kernel: the same result as one pass."""
    kernels = triton_interpreter("sam2_fast.kernels.rope_attention")
    q, k, v, cos, sin = _inputs(dtype=dtype, **CASES[case])
    n_exclude = CASES[case].get("num_exclude", 4)
    expected = _official_style(q, k, v, CASES[case].get("side", 4), n_exclude)
    out = kernels.rope_attention_triton(q, k, v, cos, sin, n_exclude, tiles=kernels.Tiles(16, 16, 4, 1), splits=splits)
    assert out.dtype == dtype and out.shape == expected.shape
    err = (out.double() - expected).abs().max() / expected.abs().max()
    assert err < TOLERANCE[dtype], err
    single = kernels.rope_attention_triton(q, k, v, cos, sin, n_exclude, tiles=kernels.Tiles(16, 16, 4, 1), splits=1)
    assert (out.double() - single.double()).abs().max() / expected.abs().max() < TOLERANCE[dtype]


def test_triton_tile_candidates_all_compute_the_attention(triton_interpreter):
    """Every tile choice the GPU sweep may pick gives the same attention (bfloat16 tiles with a
    query block larger than the grid and a ragged last key tile)."""
    kernels = triton_interpreter("sam2_fast.kernels.rope_attention")
    q, k, v, cos, sin = _inputs(b=1, side=6, d=32, frames=2, num_exclude=5, dv=16, dtype=torch.bfloat16)
    expected = _official_style(q, k, v, 6, 5)
    tiles = kernels.candidates(32, 16, torch.bfloat16)
    assert tiles[0] == kernels.block_config(32, 16, torch.bfloat16) and len(set(tiles)) == len(tiles)
    for t in tiles[:4]:  # the interpreter is slow at 128-query tiles; four cover every shape class
        out = kernels.rope_attention_triton(q, k, v, cos, sin, 5, tiles=t)
        err = (out.double() - expected).abs().max() / expected.abs().max()
        assert err < TOLERANCE[torch.bfloat16], (t, err)


def test_split_count_fills_the_multiprocessors_within_limits():
    from sam2_fast.kernels.rope_attention import num_splits

    assert num_splits(32, 7 * 4096 + 64, 64, None) == 1  # no device count (the interpreter)
    assert num_splits(256, 7 * 4096 + 64, 64, 132) == 1  # 8 objects already fill an H100 / H200
    assert num_splits(32, 7 * 4096 + 64, 64, 132) == 9  # 1 object: 288 programs, two per SM
    assert num_splits(64, 4096, 64, 132) == 5  # self-attention: 5 splits of 13 key tiles
    assert num_splits(1, 4096, 64, 132) == 16  # at most 16
    assert num_splits(4, 300, 64, 132) == 1  # under 4 key tiles per split: not worth it


def test_tiles_fit_the_shared_memory_of_each_generation():
    """Hopper-class parts get the large tiles; A100 and consumer parts (99 KiB per block) the
    small ones; every shipped pair is in the AOT check for its target."""
    from sam2_fast.kernels.rope_attention import SHIPPED, aot_specs, block_config

    for head_dim, value_dim in SHIPPED:
        for cc in (80, 86, 89, 120):
            assert block_config(head_dim, value_dim, torch.bfloat16, cc) == block_config(head_dim, value_dim, torch.bfloat16, 80)
        assert block_config(head_dim, value_dim, torch.bfloat16, 90) == block_config(head_dim, value_dim, torch.bfloat16, 100)
    names = {(s.name, s.targets) for s in aot_specs()}
    for head_dim, value_dim in SHIPPED:
        for cc in (80, 90):
            t = block_config(head_dim, value_dim, torch.bfloat16, cc)
            assert (f"rope_attention d{head_dim} dv{value_dim} bf16 {t.block_m}x{t.block_n}", (cc,)) in names


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_memory_attention_stack_runs_the_triton_kernels_like_the_reference(dtype, triton_interpreter):
    """The model's memory attention (real widths: d_model 256, 64-dim memories folded into the
    output projection, 2 objects, object pointers excluded from RoPE) on a 4x4 grid with the
    Triton kernels forced, against the same module on the reference backend."""
    import dataclasses

    from sam2_fast.modeling.config import SAM2Config
    from sam2_fast.modeling.builders import build_memory_attention

    triton_interpreter("sam2_fast.kernels.rope_attention")
    torch.manual_seed(0)
    cfg = dataclasses.replace(SAM2Config(), memory_attention_num_layers=2, rope_feat_sizes=(4, 4))
    module = build_memory_attention(cfg).eval().to(dtype)
    curr, curr_pos = torch.randn(2, 16, 2, 256).to(dtype)
    memory, memory_pos = torch.randn(2, 3 * 16 + 4, 2, 64).to(dtype)
    args = dict(curr=curr, memory=memory, curr_pos=curr_pos, memory_pos=memory_pos, num_obj_ptr_tokens=4)
    with torch.inference_mode():
        with use_backend("reference", op="rope_attention"):
            expected = module(**args)
        with use_backend("triton", op="rope_attention"):
            out = module(**args)
    assert out.dtype == dtype and out.shape == (16, 2, 256)
    err = (out.double() - expected.double()).norm() / expected.double().norm()
    assert err < {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype], err
