"""``sam2-fast bench`` (sam2_fast._bench.runner): timing helpers, FLOP counting of the fused ops,
the table, and a short real run of this project's side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sam2_fast._bench import runner
from sam2_fast.cli import main


def test_interleaved_alternates_the_implementations_and_drops_warmups() -> None:
    calls: list[str] = []
    times = runner.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                               repeats=2, warmup=1)
    assert calls == ["a", "b"] * 3
    assert [len(v) for v in times.values()] == [2, 2]
    assert all(t >= 0 for v in times.values() for t in v)


@pytest.mark.parametrize(
    "window, stride, windows, queries, keys",
    [(4, 1, 6, 16, 16), (4, 2, 6, 4, 16), (0, 1, 1, 70, 70), (0, 2, 1, 15, 70)],
    ids=["window4", "window4 pooled", "global", "global pooled"],
)
def test_window_attention_is_counted_like_explicit_attention(window, stride, windows, queries, keys) -> None:
    """The formula equals what FlopCounterMode counts for the same attention written as
    matmuls: [1, 10, 7] tokens, 2 heads of 12 channels, windows padded to 12 x 8."""
    from sam2_fast.ops import window_attention

    qkv, bias = torch.randn(1, 10, 7, 3 * 24), torch.randn(3 * 24)
    fused = runner.count_gflop(lambda: window_attention(qkv, 2, window, stride, bias))
    q, k, v = torch.randn(windows, 2, queries, 12), torch.randn(windows, 2, keys, 12), torch.randn(windows, 2, keys, 12)
    explicit = runner.count_gflop(lambda: (q @ k.transpose(-1, -2)).softmax(-1) @ v)
    assert fused > 0 and fused == pytest.approx(explicit)


def test_rope_attention_flops() -> None:
    from sam2_fast.modeling.position_encoding import axial_rope_cos_sin
    from sam2_fast.ops import rope_attention

    q, k, v = torch.randn(2, 1, 16, 32), torch.randn(2, 1, 3 * 16 + 4, 32), torch.randn(2, 1, 3 * 16 + 4, 8)
    cos, sin = axial_rope_cos_sin(32, 4, 4, 10000.0)
    gflop = runner.count_gflop(lambda: rope_attention(q, k, v, cos, sin, 4))
    assert gflop * 1e9 == pytest.approx(2 * 2 * 16 * 52 * (32 + 8))


def test_cpu_sdpa_is_counted() -> None:
    q, k, v = torch.randn(1, 2, 16, 8), torch.randn(1, 2, 20, 8), torch.randn(1, 2, 20, 4)
    gflop = runner.count_gflop(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v))
    assert gflop * 1e9 == pytest.approx(2 * 2 * 16 * 20 * (8 + 4))


def test_table_has_ratios_and_fractions_of_the_peak() -> None:
    rows = [
        runner.Result("set_image", 2.0, 4.0, gflop=300.0),
        runner.Result("ours only", 0.5, None, note="this project only"),
    ]
    table = runner.format_table(rows, {"fp32": 300e9, "bf16": 150e9}, "header")
    lines = table.splitlines()
    assert lines[0] == "header"
    assert lines[2].endswith("| % of GEMM peak (fp32) |")
    assert "| set_image | 2.00 s | 4.00 s | 2.00x | 300.0 | 150 | 50 % |" in lines
    assert "| ours only (this project only) | 500.0 ms | — |  |  |  |  |" in lines


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match=r"only: unknown benchmark\(s\) \['nope'\]"):
        runner.run(only=["nope"])
    with pytest.raises(ValueError, match="repeats must be an int >= 1, got 0"):
        runner.run(only=["predict"], repeats=0)


def test_cli_rejects_unknown_benchmarks(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--only", "predict,warp"])
    assert exc.value.code == 2
    assert "--only expects comma-separated names from cold_start,set_image,predict,amg,video" in capsys.readouterr().err


def test_cli_runs_predict_and_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A real (short) run of this project's side: the table and the JSON with every sample."""
    assert main(["bench", "--only", "predict", "--repeats", "1", "--no-official", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "bench.json").read_text())
    fast = saved["fast_mode"]
    assert f"| predict: 1 click, 3 masks at image size: fast mode ({fast}) |" in out
    assert "official package not measured: not requested (--no-official)" in out
    assert set(saved["machine"]) >= {"cpu", "flags", "cpus", "threads"}
    # the fast mode, and the exact one where the fast mode is not float32 on this machine
    assert len(saved["results"]) == (1 if fast == "float32" else 2)
    row = saved["results"][-1]
    assert row["official"] is None and len(row["samples"]["ours"]) == 5
    # ~0.99 GFLOP a click; without the C++ upscaler's FLOP formula the count was 0.46
    assert row["gflop"] > 0.9 and saved["peaks_flops"]["fp32"] > 0
    assert (tmp_path / "bench.md").read_text().startswith("`sam2-fast bench`")


class _Modes:
    fast_name, fast_differs = "bfloat16", True


def test_fast_rows_take_the_faster_official_mode_as_their_baseline() -> None:
    times = {"ours": [1.0, 1.0, 1.0], "ours exact": [3.0] * 3, "official": [4.0] * 3, "official bf16": [2.0] * 3}
    fast, exact = runner.mode_rows(_Modes(), "set_image", times, gflop=10.0)
    assert fast.name == "set_image: fast mode (bfloat16) vs the faster official mode"
    assert (fast.ours, fast.official, fast.official_label, fast.ratio) == (1.0, 2.0, "official bf16", 2.0)
    assert exact.name == "set_image: exact fp32 vs official fp32"
    assert (exact.ours, exact.official, exact.ratio) == (3.0, 4.0, 4.0 / 3.0)
    times["official bf16"] = [5.0] * 3  # official fp32 is the faster mode there
    fast, _ = runner.mode_rows(_Modes(), "set_image", times)
    assert (fast.official, fast.official_label) == (4.0, "official fp32")


def test_without_a_16_bit_fast_mode_both_rows_share_the_samples() -> None:
    class Exact:
        fast_name, fast_differs = "float32", False

    times = {"ours": [2.0], "official": [4.0], "official bf16": [6.0]}
    fast, exact = runner.mode_rows(Exact(), "predict", times)
    assert fast.ours == exact.ours == 2.0 and fast.ratio == exact.ratio == 2.0


def test_the_machine_line_names_the_cpu_class_and_both_peaks(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    line = runner.machine_line({"fp32": 200e9, "bf16": 900e9})
    assert "GEMM peak fp32 200 GFLOP/s, bf16 900 GFLOP/s" in line
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in line and "torch threads" in line
    assert any(c in line for c in ("AMX", "AVX512-BF16, no AMX", "no AMX, no AVX512-BF16"))


def test_a_slow_gemm_peak_is_measured_at_a_smaller_size(monkeypatch) -> None:
    """A dtype without a fast kernel (bfloat16 under ONEDNN_MAX_CPU_ISA=AVX2: a 2048^3
    product ran for minutes) is measured at the largest size whose product fits the budget,
    and the machine line says which size each peak used."""
    import sam2_fast.precision as precision

    sizes = []

    def fake_flops(dtype, size, repeats=5, warmup=1):
        sizes.append(size)
        return 2e9  # 2 GFLOP/s: a 256^3 product takes 16.8 ms
    monkeypatch.setattr(precision, "matmul_flops", fake_flops)
    monkeypatch.setattr(runner, "PEAK_PRODUCT_BUDGET_S", 1.0)
    flops, size = runner.gemm_peak(torch.bfloat16)
    assert (flops, size) == (2e9, 512) and sizes == [256, 512]  # 1024^3 would take 1.07 s
    line = runner.machine_line({"fp32": 200e9, "bf16": 2e9}, {"fp32": 2048, "bf16": 512})
    assert "(fp32 2048^3, bf16 512^3, median)" in line
