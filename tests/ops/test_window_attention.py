"""window_attention: the reference against the official Hiera block's math, the Triton kernel
(in Triton's CPU interpreter) against the reference, bad inputs, the custom op and the
dispatcher.

Triton decides between GPU compilation and its CPU interpreter when it is imported
(``TRITON_INTERPRET`` is read once), so the ``test_interpreter_*`` tests run only in a process
started with ``TRITON_INTERPRET=1``; :func:`test_interpreter_suite_in_subprocess` starts one.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam2_fast.ops import BackendError, get_op, use_backend, window_attention
from sam2_fast.ops._common import extension_refusal, flash_attention_refusal
from sam2_fast.ops.window_attention import window_attention_reference

OP = "window_attention"
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

# Triton (bf16 / fp16 inputs, fp32 softmax and sums) against the float32 reference on the same
# rounded inputs: outputs are averages of values of size ~1, so the output's own rounding
# (2^-8 for bf16, 2^-11 for fp16) sets the scale.
TOLERANCES = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
}

# (batch, H, W, window_size, q_stride, heads, head_dim); shapes kept small for the interpreter
CASES = {
    "window4 padded bottom+right, 2 images": (2, 10, 7, 4, 1, 2, 12),
    "window4 pooled, padded": (1, 10, 6, 4, 2, 2, 12),
    "window8 pooled, padded": (1, 12, 10, 8, 2, 1, 20),
    "window7 padded (odd window)": (1, 9, 8, 7, 1, 1, 24),
    "window14 several query and key tiles": (1, 14, 14, 14, 1, 1, 20),
    "global, several key tiles": (1, 9, 11, 0, 1, 2, 24),
    "global pooled, odd size, 2 images": (2, 9, 10, 0, 2, 1, 12),
    "no padding": (1, 8, 8, 4, 1, 2, 16),
    # head dims the kernel splits into a chunk and a tail (head_chunks): 48 = 32 + 16 and
    # 40 = 32 + 16 with 8 tail channels masked
    "head dim 48 in two chunks, window4 pooled, padded": (1, 10, 6, 4, 2, 2, 48),
    "head dim 40, masked tail, window7 padded": (1, 9, 8, 7, 1, 1, 40),
    "head dim 40, masked tail, global": (1, 9, 11, 0, 1, 1, 40),
}
TAIL_CASES = [name for name in CASES if name.startswith("head dim")]


def make_qkv(case: tuple, dtype: torch.dtype = torch.float32, seed: int = 0):
    """Random ``qkv`` ``[B, H, W, 3 * C]`` and ``qkv_bias`` ``[3 * C]`` for a case."""
    b, h, w, _, _, heads, head_dim = case
    generator = torch.Generator().manual_seed(seed)
    c3 = 3 * heads * head_dim
    qkv = torch.randn(b, h, w, c3, generator=generator).to(dtype)
    bias = torch.randn(c3, generator=generator).to(dtype)
    return qkv, bias


def op_args(case: tuple) -> tuple[int, int, int]:
    _, _, _, window_size, q_stride, heads, _ = case
    return heads, window_size, q_stride


# ---------------------------------------------------------------------------------------------
# the reference against the official block's math


def official_block_attention(
    x: torch.Tensor, qkv: nn.Linear, heads: int, window_size: int, q_stride: int
) -> torch.Tensor:
    """The official ``MultiScaleBlock`` around ``MultiScaleAttention`` (sam2 1.1.0
    ``hieradet.py`` / ``utils.py``), without the output projection: zero-pad the tokens,
    partition, project, pool the queries, attend, un-partition and crop."""
    b, h, w, _ = x.shape
    if window_size > 0:
        pad_h = (window_size - h % window_size) % window_size
        pad_w = (window_size - w % window_size) % window_size
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        hp, wp = h + pad_h, w + pad_w
        x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, -1)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size, window_size, x.shape[-1])
    n, hq, wq, _ = x.shape
    q, k, v = torch.unbind(qkv(x).reshape(n, hq * wq, 3, heads, -1), 2)
    if q_stride > 1:
        pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False)
        q = pool(q.reshape(n, hq, wq, -1).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        hq, wq = q.shape[1:3]
        q = q.reshape(n, hq * wq, heads, -1)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    out = out.transpose(1, 2).reshape(n, hq, wq, -1)
    if window_size == 0:
        return out
    ws = window_size // q_stride
    h, w = h // q_stride, w // q_stride
    hp, wp = h + (ws - h % ws) % ws, w + (ws - w % ws) % ws
    out = out.reshape(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return out.reshape(b, hp, wp, -1)[:, :h, :w]


def official_case(case: tuple, seed: int = 0) -> tuple[torch.Tensor, nn.Linear]:
    b, h, w, _, _, heads, head_dim = case
    torch.manual_seed(seed)
    linear = nn.Linear(16, 3 * heads * head_dim)
    nn.init.normal_(linear.bias)  # a bias as large as the activations: padding matters
    return torch.randn(b, h, w, 16), linear


@pytest.mark.parametrize("name", list(CASES))
def test_reference_matches_official_block_math(name: str) -> None:
    case = CASES[name]
    x, linear = official_case(case)
    with torch.no_grad():
        expected = official_block_attention(x, linear, *op_args(case))
        out = window_attention_reference(linear(x), *op_args(case), linear.bias)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


# the blocked backend's own rounding on top of the inputs': float32 sums in another order;
# bfloat16 scores and probabilities rounded to 8 bits before the second product
BLOCKED_TOLERANCES = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
}


@pytest.mark.parametrize("dtype", list(BLOCKED_TOLERANCES), ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", [*CASES, *("banded: " + n for n in ("window4, last band padded, 2 images", "window4 pooled, padded"))])
def test_blocked_matches_the_reference(monkeypatch, name: str, dtype: torch.dtype) -> None:
    from sam2_fast.ops import _blocked

    banded = name.startswith("banded: ")
    case = BANDED_CASES[name.removeprefix("banded: ")] if banded else CASES[name]
    module = importlib.import_module("sam2_fast.ops.window_attention")
    if banded:  # one window row per band
        monkeypatch.setattr(module, "BAND_BYTES", 1)
    monkeypatch.setattr(_blocked, "BLOCK_BYTES", 1)  # global windows: blocks of 16 queries
    qkv, bias = make_qkv(case, dtype)
    expected = window_attention_reference(qkv.float(), *op_args(case), bias.float())
    with use_backend("blocked", op=OP):
        out = window_attention(qkv, *op_args(case), bias)
    assert out.dtype == dtype and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected, **BLOCKED_TOLERANCES[dtype])


@pytest.mark.parametrize("backend", ["cpp", "cpp_q128", "cpp_grid"])
@pytest.mark.parametrize("dtype", list(BLOCKED_TOLERANCES), ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", [*CASES, *("banded: " + n for n in ("window4, last band padded, 2 images", "window4 pooled, padded"))])
def test_cpp_matches_the_reference(monkeypatch, name: str, dtype: torch.dtype, backend: str) -> None:
    """The C++ flash kernel (blocks of 256 or 128 queries) inside the reference's partition /
    pooling, windowed and global, on bands, or reading the windows in place (``cpp_grid``,
    windowed only: padded tokens read the bias); where it cannot run (no AVX-512), its refusal
    is explained and never chosen."""
    banded = name.startswith("banded: ")
    case = BANDED_CASES[name.removeprefix("banded: ")] if banded else CASES[name]
    module = importlib.import_module("sam2_fast.ops.window_attention")
    if banded:  # one window row per band
        monkeypatch.setattr(module, "BAND_BYTES", 1)
    qkv, bias = make_qkv(case, dtype)
    reason = get_op(OP).backend(backend).supports(qkv, *op_args(case), bias)
    if reason is not None:
        assert get_op(OP).explain(qkv, *op_args(case), bias)[backend] == reason
        assert get_op(OP).select(qkv, *op_args(case), bias).name != backend
        return
    expected = window_attention_reference(qkv.float(), *op_args(case), bias.float())
    with use_backend(backend, op=OP):
        out = window_attention(qkv, *op_args(case), bias)
    assert out.dtype == dtype and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected, **BLOCKED_TOLERANCES[dtype])


def test_blocked_is_the_bfloat16_default_on_cpu_not_the_float32_one() -> None:
    case = CASES["window4 pooled, padded"]
    qkv, bias = make_qkv(case)
    assert "float32" in get_op(OP).explain(qkv, *op_args(case), bias)["blocked"]
    assert get_op(OP).select(qkv.bfloat16(), *op_args(case), bias.bfloat16()).name == (
        "triton" if INTERPRETING else "blocked")
    assert "float16" in get_op(OP).explain(qkv.half(), *op_args(case), bias.half())["blocked"]


@pytest.mark.skipif(INTERPRETING, reason="under TRITON_INTERPRET=1 the triton backend is chosen")
def test_public_op_runs_the_reference_on_cpu() -> None:
    case = CASES["window4 pooled, padded"]
    qkv, bias = make_qkv(case)
    assert get_op(OP).select(qkv, *op_args(case), bias).name == "reference"  # too small for bands
    out = window_attention(qkv, *op_args(case), bias)
    assert torch.equal(out, window_attention_reference(qkv, *op_args(case), bias))


# (batch, H, W, window_size, q_stride, heads, head_dim): three or more window rows each
BANDED_CASES = {
    "window4, last band padded, 2 images": (2, 21, 10, 4, 1, 2, 12),
    "window4 pooled, padded": (1, 22, 9, 4, 2, 2, 12),
    "window7 (odd), padded": (1, 30, 12, 7, 1, 1, 24),
    "window8 pooled, no padding": (1, 32, 16, 8, 2, 1, 20),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", list(BANDED_CASES))
@pytest.mark.parametrize("band_windows", [1, 2])
def test_banded_is_the_reference_bit_for_bit(monkeypatch, name, dtype, band_windows) -> None:
    """Bands of whole window rows (the last one partial and padded where H is not a multiple
    of the window) give the reference's result exactly, pooling and batches included."""
    module = importlib.import_module("sam2_fast.ops.window_attention")  # (the package exports the function)
    case = BANDED_CASES[name]
    qkv, bias = make_qkv(case, dtype)
    b, h, w, c3 = qkv.shape
    window = case[3]
    monkeypatch.setattr(module, "BAND_BYTES", band_windows * window * w * c3 * qkv.element_size())
    assert module._band_rows(qkv, window) == band_windows * window
    assert h > band_windows * window, "the case must make at least two bands"
    wide = torch.cat([qkv, qkv], dim=-1)[..., :c3]  # strided rows
    expected = window_attention_reference(qkv, *op_args(case), bias)
    for x in (qkv, wide):
        assert torch.equal(module.window_attention_banded(x, *op_args(case), bias), expected)
    assert torch.equal(module.window_attention_banded(qkv, *op_args(case), None),
                       window_attention_reference(qkv, *op_args(case), None))


@pytest.mark.parametrize(
    "shape, heads, window, q_stride, chosen",
    [
        ((1, 256, 256, 288), 1, 8, 1, "banded"),  # Hiera-T's first block at 1024
        ((1, 256, 256, 576), 2, 8, 2, "banded"),  # its pooled stage change
        ((1, 64, 64, 1152), 4, 0, 1, "reference"),  # global attention: one window
        ((1, 32, 32, 2304), 8, 7, 1, "reference"),  # 9.4 MB of qkv: one band's worth
    ],
)
def test_cpu_selection_bands_large_windowed_inputs(shape, heads, window, q_stride, chosen) -> None:
    qkv = torch.zeros(shape)
    assert get_op(OP).select(qkv, heads, window, q_stride, None).name == chosen
    reason = get_op(OP).explain(qkv, heads, window, q_stride, None)["banded"]
    assert (reason is None) == (chosen == "banded"), reason


def test_gradients_match_official_block_math() -> None:
    """Padded tokens reach the qkv bias: its gradient includes their share, as officially."""
    case = CASES["window4 pooled, padded"]
    x, linear = official_case(case)
    official_block_attention(x, linear, *op_args(case)).square().sum().backward()
    expected = [p.grad.clone() for p in linear.parameters()]
    linear.zero_grad()
    window_attention(linear(x), *op_args(case), linear.bias).square().sum().backward()
    for got, want in zip((p.grad for p in linear.parameters()), expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_missing_bias_pads_with_zeros() -> None:
    case = CASES["window7 padded (odd window)"]
    qkv, _ = make_qkv(case)
    out = window_attention_reference(qkv, *op_args(case))
    zeros = window_attention_reference(qkv, *op_args(case), torch.zeros(qkv.shape[-1]))
    assert torch.equal(out, zeros)


def test_non_contiguous_qkv_gives_the_same_result() -> None:
    case = CASES["window4 padded bottom+right, 2 images"]
    qkv, bias = make_qkv(case)
    transposed = qkv.transpose(1, 2).contiguous().transpose(1, 2)  # [B, H, W, 3C], W-major
    assert not transposed.is_contiguous()
    expected = window_attention_reference(qkv, *op_args(case), bias)
    torch.testing.assert_close(window_attention(transposed, *op_args(case), bias), expected)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "qkv, args, bias, error, message",
    [
        (torch.zeros(8, 8, 36), (2, 4, 1), None, ValueError, r"qkv must be \[B, H, W, 3 \* C\]"),
        (torch.zeros(1, 8, 8, 36, dtype=torch.float64), (2, 4, 1), None, TypeError, "float64"),
        (torch.zeros(1, 8, 8, 36, dtype=torch.int32), (2, 4, 1), None, TypeError, "float32, bfloat16"),
        (torch.zeros(1, 8, 8, 36), (5, 4, 1), None, ValueError, r"3 \* num_heads = 15"),
        (torch.zeros(1, 8, 8, 36), (0, 4, 1), None, ValueError, "num_heads must be an int >= 1"),
        (torch.zeros(1, 8, 8, 36), (2, -1, 1), None, ValueError, "window_size must be an int >= 0"),
        (torch.zeros(1, 8, 8, 36), (2, 7, 2), None, ValueError, r"window_size \(7\) must be a multiple"),
        (torch.zeros(1, 8, 8, 36), (2, 4, 1), torch.zeros(12), ValueError, r"qkv_bias must be \[36\]"),
        (torch.zeros(1, 8, 8, 36), (2, 4, 1), torch.zeros(36, device="meta"), ValueError, "qkv_bias is on meta"),
        ([[0.0]], (2, 4, 1), None, TypeError, "qkv must be a torch.Tensor"),
        (torch.zeros(1, 1, 5, 12), (1, 0, 2), None, ValueError, r"token grid \(1x5\) must be at least"),
    ],
    ids=["rank", "float64", "int", "heads", "zero heads", "window", "pool window", "bias shape",
         "bias device", "not a tensor", "grid smaller than the pooling"],
)
def test_bad_input_is_rejected(qkv, args, bias, error, message) -> None:
    with pytest.raises(error, match=message):
        window_attention(qkv, *args, bias)


@pytest.mark.skipif(INTERPRETING, reason="under TRITON_INTERPRET=1 triton takes cpu tensors")
def test_forcing_triton_on_cpu_raises_with_the_reason() -> None:
    qkv, bias = make_qkv(CASES["no padding"])
    reason = get_op(OP).explain(qkv, 2, 4, 1, bias)["triton"]
    assert reason is not None and ("TRITON_INTERPRET" in reason or "triton is not importable" in reason)
    with use_backend("triton", op=OP), pytest.raises(BackendError, match="backend 'triton'.*cannot run"):
        window_attention(qkv, 2, 4, 1, bias)


def test_custom_op_schema_and_fake() -> None:
    """What torch.compile traces: the registered op and its fake (shape-only) kernel."""
    case = CASES["global pooled, odd size, 2 images"]
    qkv, bias = make_qkv(case)
    with use_backend("reference", op=OP):
        torch.library.opcheck(
            torch.ops.sam2_fast.window_attention.default,
            (qkv, *op_args(case), bias),
            test_utils=("test_schema", "test_faketensor"),
        )
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.ops.sam2_fast.window_attention(torch.empty(2, 9, 10, 36), 1, 0, 2, None)
    assert fake.shape == (2, 4, 5, 12)


@pytest.mark.skipif(INTERPRETING, reason="under TRITON_INTERPRET=1 the triton backend is chosen")
def test_torch_compile_traces_through_the_op() -> None:
    """One graph (``fullgraph=True``) with the op as a node; aot_eager keeps the test fast."""
    case = CASES["window4 pooled, padded"]
    qkv, bias = make_qkv(case)
    compiled = torch.compile(
        lambda t, b: window_attention(t, *op_args(case), b) * 2, backend="aot_eager", fullgraph=True
    )
    with torch.no_grad():
        torch.testing.assert_close(compiled(qkv, bias), 2 * window_attention_reference(qkv, *op_args(case), bias))


# ---------------------------------------------------------------------------------------------
# the Triton kernel in the CPU interpreter


@pytest.fixture
def interpreter() -> None:
    pytest.importorskip("triton")
    if not INTERPRETING:
        pytest.skip("needs TRITON_INTERPRET=1 before Python starts (test_interpreter_suite_in_subprocess)")


def run_triton(qkv: torch.Tensor, args: tuple, bias: torch.Tensor | None) -> torch.Tensor:
    with use_backend("triton", op=OP):
        assert get_op(OP).select(qkv, *args, bias).name == "triton"
        return window_attention(qkv, *args, bias)


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("name", list(CASES))
def test_interpreter_matches_reference(interpreter, name: str, dtype: torch.dtype) -> None:
    case = CASES[name]
    qkv, bias = make_qkv(case, dtype)
    expected = window_attention_reference(qkv.float(), *op_args(case), bias.float())
    out = run_triton(qkv, op_args(case), bias)
    assert out.dtype == dtype and out.shape == expected.shape
    torch.testing.assert_close(out.float(), expected, **TOLERANCES[dtype])


def test_interpreter_without_bias_and_non_contiguous(interpreter) -> None:
    case = CASES["window4 padded bottom+right, 2 images"]
    qkv, _ = make_qkv(case)
    wide = torch.cat([qkv, torch.randn_like(qkv)], dim=-1)[..., : qkv.shape[-1]]  # strided
    expected = window_attention_reference(qkv, *op_args(case))
    torch.testing.assert_close(run_triton(wide, op_args(case), None), expected, **TOLERANCES[torch.float32])


@pytest.mark.parametrize(
    "head_dim, window_size, q_stride", [(56, 4, 2), (72, 0, 1), (96, 8, 1)], ids=["d56", "d72", "d96"]
)
def test_interpreter_preset_head_dims(interpreter, head_dim: int, window_size: int, q_stride: int) -> None:
    """The head dims of the presets (56: base-plus, 72: large, 96: tiny / small): 64, 64 + 16
    and 64 + 32 channels inside the kernel."""
    case = (1, 8, 6, window_size, q_stride, 1, head_dim)
    qkv, bias = make_qkv(case, torch.float16)
    expected = window_attention_reference(qkv.float(), *op_args(case), bias.float())
    torch.testing.assert_close(run_triton(qkv, op_args(case), bias).float(), expected, **TOLERANCES[torch.float16])


def test_head_chunks_cover_the_head_dim_with_less_padding() -> None:
    """The kernel's channel chunks: one padded power of two where it wastes at most 1/8, else
    a chunk and a tail that waste less; the tail cases above really take the two-chunk path."""
    pytest.importorskip("triton")
    from sam2_fast.kernels.window_attention import head_chunks

    assert head_chunks(56) == (64, 0) and head_chunks(64) == (64, 0) and head_chunks(16) == (16, 0)
    assert head_chunks(72) == (64, 16) and head_chunks(96) == (64, 32)
    for name in TAIL_CASES:
        head_dim = CASES[name][-1]
        main, tail = head_chunks(head_dim)
        assert tail > 0 and main < head_dim <= main + tail, name
    for head_dim in range(1, 129):
        main, tail = head_chunks(head_dim)
        assert main + tail >= head_dim and main >= 16 and tail in (0, 16, 32, 64), head_dim
        assert tail == 0 or main + tail < triton_next_power_of_2(head_dim), head_dim


def triton_next_power_of_2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


def test_interpreter_head_dims_above_128_fall_back_to_the_reference(interpreter) -> None:
    qkv = torch.zeros(1, 4, 4, 3 * 160)
    assert "head dim 160" in get_op(OP).explain(qkv, 1, 4, 1, None)["triton"]
    assert get_op(OP).select(qkv, 1, 4, 1, None).name == "reference"


def test_interpreter_suite_in_subprocess() -> None:
    """Runs the ``interpreter`` tests of this file in a fresh Python with TRITON_INTERPRET=1."""
    if INTERPRETING:
        pytest.skip("TRITON_INTERPRET=1 already: the interpreter tests run in this process")
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("SAM2_FAST_BACKEND", None)
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
        str(Path(__file__)), "-k", "interpreter and not subprocess",
    ]
    # cwd outside the repository: `python -m` puts the cwd on sys.path, and the source tree
    # must not shadow the installed package (tests/conftest.py refuses that)
    proc = subprocess.run(
        command, env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{' '.join(command)} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert " passed" in proc.stdout and " skipped" not in proc.stdout, proc.stdout[-2000:]


# ---------------------------------------------------------------------------------------------
# where automatic selection prefers the kernel on a GPU (measured on an H200, bench/gpu)


@pytest.mark.parametrize(
    "dtype, heads, dim, window, preferred",
    [
        (torch.bfloat16, 1, 96, 8, True),  # tiny / small stage 1: 1.9x faster than SDPA
        (torch.float16, 8, 448, 14, True),  # base-plus stage 3 (head dim 56): 1.5-2.5x
        (torch.bfloat16, 4, 384, 0, False),  # global attention: SDPA 4.7x faster
        (torch.bfloat16, 8, 576, 16, False),  # large (head dim 72): SDPA 1.2-1.6x faster
        (torch.float32, 1, 96, 8, False),  # exact float32 kernel: SDPA faster
    ],
)
def test_gpu_preference_follows_the_measurements(dtype, heads, dim, window, preferred) -> None:
    from types import SimpleNamespace

    from sam2_fast.ops.window_attention import _triton_preference

    on_gpu = SimpleNamespace(device=torch.device("cuda"), shape=(1, 64, 64, 3 * dim), dtype=dtype)
    reason = _triton_preference(on_gpu, heads, window, 1, None)
    assert (reason is None) == preferred, reason
    on_cpu = SimpleNamespace(device=torch.device("cpu"), shape=(1, 64, 64, 3 * dim), dtype=dtype)
    assert _triton_preference(on_cpu, heads, window, 1, None) is None  # the interpreter


def test_the_shipped_kernel_configurations_are_the_ones_the_presets_launch() -> None:
    """The Triton kernel compiles ahead of time exactly the configurations the eight presets
    launch at 1024 (the kernel module knows no model; the model derives its launches)."""
    pytest.importorskip("triton")
    from sam2_fast.kernels.window_attention import SHIPPED
    from sam2_fast.modeling.hiera import window_attention_launches

    assert sorted(SHIPPED) == window_attention_launches(1024)
    assert window_attention_launches(512) != window_attention_launches(1024)  # the global grid moves


@pytest.mark.parametrize("stride", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_max_pool_nhwc_is_max_pool2d(stride, dtype):
    """The strided-maxima pooling gives max_pool2d's values: odd sizes floored, NaN propagated,
    any input strides (a view out of a wider tensor), contiguous output."""
    from sam2_fast.ops.window_attention import max_pool_nhwc

    torch.manual_seed(0)
    wide = torch.randn(2, 10, 11, 12, dtype=dtype)
    wide[0, 1, 1, 3] = float("nan")  # x[0, 0, 1, 0]: in the first window
    x = wide[:, 1:, :, 3:9]  # [2, 9, 11, 6], not contiguous
    with torch.inference_mode():
        got = max_pool_nhwc(x, stride)
    expected = F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)
    assert got.is_contiguous() and got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(got[0, 0, 0, 0])


def _grid_inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 4, 16, generator=g).to(dtype)  # 2 heads of 8, pooled 8 x 8 / 2
    k = torch.randn(1, 8, 8, 16, generator=g).to(dtype)
    v = torch.randn(1, 8, 8, 12, generator=g).to(dtype)
    return q, k, v, torch.zeros(16, dtype=dtype), torch.zeros(12, dtype=dtype)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda q, k, v, kp, vp: (q[0], k, v, kp, vp, 2, 4, 2, 0.3), r"must be \[B, rows, columns, channels\]"),
        (lambda q, k, v, kp, vp: (q, k.bfloat16(), v, kp, vp, 2, 4, 2, 0.3), "must have one dtype"),
        (lambda q, k, v, kp, vp: (q, k, v, kp, vp, 3, 4, 2, 0.3), "a multiple of heads = 3"),
        (lambda q, k, v, kp, vp: (q, k, v[:, :7], kp, vp, 2, 4, 2, 0.3), "k and v must be one"),
        (lambda q, k, v, kp, vp: (q, k, v, kp[:8], vp, 2, 4, 2, 0.3), r"k_pad and v_pad must be \[16\] and \[12\]"),
        (lambda q, k, v, kp, vp: (q, k, v, kp, vp, 2, 4, 1, 0.3), "must be non-empty and covered by the 2 x 2 tiles of 1"),
        (lambda q, k, v, kp, vp: (q, k, v, kp, vp, 2, 0, 2, 0.3), "window and q_window must be > 0"),
        (lambda q, k, v, kp, vp: (q, k, v, kp, vp, 2, 4, 2, 0.3, 8, 512), "q_block must be >= 16"),
    ],
)
def test_grid_kernel_bad_input_names_the_argument(call, match) -> None:
    """``window_flash_attention`` (the ``cpp_grid`` backend's kernel) refuses malformed grids
    with a message that names the argument and what it expected."""
    if extension_refusal("cpu") is not None or flash_attention_refusal(torch.float32) is not None:
        pytest.skip("the C++ flash attention cannot run here (test_cpp_matches_the_reference checks the refusal)")
    with pytest.raises((ValueError, TypeError), match=match):
        torch.ops.sam2_fast.window_flash_attention(*call(*_grid_inputs()))
    # the op stays usable
    assert torch.ops.sam2_fast.window_flash_attention(*_grid_inputs(), 2, 4, 2, 0.3).shape == (1, 4, 4, 12)
