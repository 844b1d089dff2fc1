"""The measured backend choice (sam2_fast.ops._tuning + the dispatcher): which backend wins,
what is remembered where, and when nothing is measured. Timings are injected: each fake
backend advances a fake clock by its cost, so no assertion depends on this machine's speed."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sam2_fast.ops import _dispatch, _tuning, tuning, use_backend
from sam2_fast.ops._dispatch import Op


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(_tuning, "clock", fake)
    return fake


@pytest.fixture
def cache_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "tuning.json"
    monkeypatch.setattr(_tuning, "cache", _tuning.TuningCache(path))
    _tuning.forget()
    yield path
    _tuning.forget()


@pytest.fixture
def registry():
    """Ops made by a test are unregistered after it."""
    before = dict(_dispatch._REGISTRY)
    yield
    _dispatch._REGISTRY.clear()
    _dispatch._REGISTRY.update(before)


@pytest.fixture
def tuned(clock, cache_file, registry):
    with tuning(True):
        yield clock


def make_op(clock: FakeClock, costs: dict[str, float], name: str = "fake_op", **backend_kwargs):
    """An op whose backends (in ``costs`` order) each cost ``costs[b]`` fake seconds a call
    and record their calls; returns (op, calls)."""
    op = Op(name)
    calls: dict[str, int] = {b: 0 for b in costs}

    def backend(b: str):
        def run(x: torch.Tensor) -> torch.Tensor:
            calls[b] += 1
            clock.now += costs[b]
            return x + 1

        return run

    for b in costs:
        op.add_backend(b, backend(b), **backend_kwargs.get(b, {}))
    return op, calls


X = torch.zeros(3, 5)


def test_the_measured_fastest_backend_wins_over_the_built_in_order(tuned) -> None:
    op, calls = make_op(tuned, {"first": 3.0, "fast": 1.0, "reference": 2.0})
    assert op.select(X).name == "fast"
    # one warm-up and ROUNDS timed calls each
    assert calls == {b: 1 + _tuning.ROUNDS for b in calls}
    verdict = op.measured(X)
    assert verdict.winner == "fast" and verdict.seconds == {"first": 3.0, "fast": 1.0, "reference": 2.0}
    explained = op.explain(X)
    assert explained["fast"] is None
    assert explained["first"] == "passed over: measured slower: 3e+03 ms vs 1e+03 ms (fast)"


def test_a_verdict_is_measured_once_per_shape_class(tuned) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    op(X)
    measured = dict(calls)
    op(torch.ones(3, 5))  # the same class
    op(torch.ones(4, 7))  # sizes up to 4 are exact: another class
    assert calls["a"] == 2 * measured["a"]  # measured twice, never run for real
    assert calls["b"] == measured["b"] + 1 + (1 + _tuning.ROUNDS) + 1


def test_sizes_are_rounded_up_to_powers_of_two_in_the_shape_class() -> None:
    assert _tuning.size_class(3000) == _tuning.size_class(4096) == 4096
    assert _tuning.size_class(4097) == 8192
    assert _tuning.size_class(12) == _tuning.size_class(16) == 16 and _tuning.size_class(3) == 3
    assert _tuning.default_shape_class(torch.zeros(2, 3000, dtype=torch.bfloat16), 7, None) == "bfloat16[2x4096], 7, None"


def test_a_new_process_reads_the_verdict_from_the_cache_file(tuned, cache_file) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    op.select(X)
    data = json.loads(cache_file.read_text())
    (machine,) = data["machines"].values()
    assert machine["fingerprint"]["device"] == "cpu"
    (key,) = machine["verdicts"]
    assert key.startswith("fake_op | float32[3x8]") and machine["verdicts"][key]["winner"] == "b"
    # a fresh process: nothing in memory, the same file
    _tuning.forget()
    _tuning.cache = _tuning.TuningCache(cache_file)
    before = dict(calls)
    assert op.select(X).name == "b"
    assert calls == before  # nothing measured


@pytest.mark.parametrize("content", ["{not json", '{"format": 99, "machines": {}}', '["a list"]', ""])
def test_a_corrupt_or_foreign_cache_is_measured_again_not_an_error(tuned, cache_file, content, caplog) -> None:
    cache_file.parent.mkdir(parents=True)
    cache_file.write_text(content)
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    with caplog.at_level(logging.WARNING, logger="sam2_fast.ops._tuning"):
        assert op.select(X).name == "b"
    assert calls["a"] == 1 + _tuning.ROUNDS
    assert json.loads(cache_file.read_text())["format"] == _tuning.CACHE_FORMAT  # rewritten whole
    assert "measuring again" in caplog.text


def test_another_machine_or_torch_is_measured_again(tuned, cache_file, monkeypatch) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    op.select(X)
    _tuning.forget()
    monkeypatch.setattr(_tuning, "_machine_ids", {})
    real = _tuning.machine_fingerprint
    monkeypatch.setattr(_tuning, "machine_fingerprint", lambda device="cpu": {**real(device), "torch": "9.9"})
    op.select(X)
    assert calls["a"] == 2 * (1 + _tuning.ROUNDS)
    assert len(json.loads(cache_file.read_text())["machines"]) == 2  # the first one is kept


def test_the_fingerprint_names_the_cpu_its_flags_threads_and_an_isa_cap(monkeypatch) -> None:
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    fp = _tuning.machine_fingerprint("cpu")
    assert {"cpu", "flags", "threads", "torch", "sam2_fast"} <= set(fp)
    assert fp["threads"] == torch.get_num_threads() and fp["onednn_max_cpu_isa"] == "AVX2"
    assert set(fp["flags"]) <= set(_tuning._CPU_FLAGS)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert _tuning.machine_id("cpu")[0] != _tuning._fingerprint_id(fp)


def test_tuning_off_runs_the_built_in_default_and_measures_nothing(clock, cache_file, registry, monkeypatch) -> None:
    op, calls = make_op(clock, {"first": 3.0, "fast": 1.0})
    monkeypatch.setenv(_tuning.ENV_TUNE, "0")
    assert op.select(X).name == "first"
    op(X)
    assert calls == {"first": 1, "fast": 0}
    assert not cache_file.exists()
    with tuning(True):  # the context wins over the environment
        assert op.select(X).name == "fast"
    with tuning(False):
        assert op.select(X).name == "first"  # off: the measurement is not used either


def test_remeasure_measures_each_shape_class_again_once(tuned) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    op.select(X)
    with tuning("remeasure"):
        op.select(X)
        op.select(X)
    assert calls["a"] == 2 * (1 + _tuning.ROUNDS)


def test_a_forced_backend_wins_over_the_measurement(tuned) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    with use_backend("a", op="fake_op"):
        assert op.select(X).name == "a"
    assert calls == {"a": 0, "b": 0}


def test_backends_that_refuse_or_are_not_timed_are_not_candidates(tuned) -> None:
    op, calls = make_op(
        tuned, {"refuses": 0.1, "compiled-like": 0.2, "a": 2.0, "b": 1.0},
        refuses={"supports": lambda x: "not these inputs"},
        **{"compiled-like": {"timed": lambda x: "compiling takes minutes"}},
    )
    assert op.select(X).name == "b"
    assert calls["refuses"] == 0 and calls["compiled-like"] == 0
    explained = op.explain(X)
    assert explained["refuses"] == "not these inputs"
    assert explained["compiled-like"] == "passed over: not measured (compiling takes minutes)"


def test_prefer_only_sets_the_default(tuned) -> None:
    op, _ = make_op(tuned, {"slow": 2.0, "preferred-against": 1.0},
                    **{"preferred-against": {"prefer": lambda x: "hand-measured slower"}})
    assert op.select(X).name == "preferred-against"
    with tuning(False):
        assert op.select(X).name == "slow"


def test_a_candidate_that_fails_is_noted_and_left_out(tuned) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})

    def broken(x):
        raise RuntimeError("no kernel for this shape")

    op.add_backend("broken", broken)
    assert op.select(X).name == "b"
    verdict = op.measured(X)
    assert "broken" not in verdict.seconds
    assert verdict.notes["broken"] == "failed while measured: RuntimeError: no kernel for this shape"


def test_a_far_slower_candidate_is_timed_once_only(tuned) -> None:
    op, calls = make_op(tuned, {"slow": 100.0, "fast": 1.0})
    op.select(X)
    assert calls == {"slow": 3, "fast": 1 + _tuning.ROUNDS}  # warm-up + two timed calls
    assert "timed calls took 1e+05 ms and 1e+05 ms, over 4x" in op.measured(X).notes["slow"]


def test_one_preempted_call_does_not_drop_the_fastest_candidate(tuned) -> None:
    """A single timed call that another process stretched gets a second one: the fastest
    backend stays a candidate and wins (a verdict is kept on disk, so one spike would last)."""
    op, calls = make_op(tuned, {"reference": 2.0, "fast": 1.0})
    real = op.backend("fast").fn

    def preempted_once(x):
        if calls["fast"] == 1:  # the first timed call, after the warm-up
            tuned.now += 50.0
        return real(x)

    op._backends["fast"] = op.backend("fast").__class__("fast", preempted_once)
    assert op.select(X).name == "fast"
    assert calls["fast"] == 1 + _tuning.ROUNDS  # warm-up, the spike, then the rounds it lacked
    assert op.measured(X).seconds["fast"] == pytest.approx(1.0)


def test_a_burst_of_load_over_two_timed_calls_does_not_flip_the_verdict(tuned) -> None:
    """Load from another process only adds time: the fastest call of each candidate counts,
    so two of three calls stretched (a median would then be the stretched time) keep the
    faster backend the winner, with its undisturbed time."""
    op, calls = make_op(tuned, {"reference": 1.3, "fast": 1.0})
    real = op.backend("fast").fn

    def loaded_twice(x):
        if calls["fast"] in (2, 3):  # the second and third timed calls
            tuned.now += 1.0
        return real(x)

    op._backends["fast"] = op.backend("fast").__class__("fast", loaded_twice)
    assert op.select(X).name == "fast"
    assert calls["fast"] == 1 + _tuning.ROUNDS
    assert op.measured(X).seconds == {"reference": pytest.approx(1.3), "fast": pytest.approx(1.0)}


def test_an_op_measured_inside_a_candidate_does_not_count_against_it(tuned) -> None:
    inner, _ = make_op(tuned, {"i1": 50.0, "i2": 40.0}, name="inner_op")
    outer = Op("outer_op")
    outer.add_backend("uses_inner", lambda x: (setattr(tuned, "now", tuned.now + 1.0), inner(x))[1])
    outer.add_backend("plain", lambda x: (setattr(tuned, "now", tuned.now + 60.0), x)[1])
    # uses_inner's first call measures inner_op (~360 fake seconds): warmed up again, it wins
    assert outer.select(X).name == "uses_inner"
    assert outer.measured(X).seconds["uses_inner"] == pytest.approx(41.0)


def test_a_slow_first_timed_call_is_not_mistaken_for_a_warm_up(tuned) -> None:
    """The warm-up may carry one-time costs (a weight cast, a lazy load): it is not timed."""
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    real = op.backend("b").fn

    def cold_then_fast(x):
        if calls["b"] == 0:
            tuned.now += 1000.0
        return real(x)

    op._backends["b"] = op.backend("b").__class__("b", cold_then_fast)
    assert op.select(X).name == "b"


def test_nothing_is_measured_under_a_dispatch_mode_the_verdict_is_used(tuned) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    with FlopCounterMode(display=False):
        assert op.select(X).name == "a"  # nothing known yet: the default
    assert calls == {"a": 0, "b": 0}
    op.select(X)
    with FlopCounterMode(display=False):
        assert op.select(X).name == "b"


def test_meta_tensors_are_never_measured(tuned) -> None:
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    assert op.select(torch.zeros(3, 5, device="meta")).name == "a"
    assert calls == {"a": 0, "b": 0}


def test_the_cache_merges_with_what_another_process_wrote(tmp_path) -> None:
    path = tmp_path / "tuning.json"
    first, second = _tuning.TuningCache(path), _tuning.TuningCache(path)
    first.get("m", "k")  # loaded (empty) before the other process writes
    second.put("m", {"device": "cpu"}, "op2 | x", _tuning.Verdict("b", {"a": 2.0, "b": 1.0}))
    first.put("m", {"device": "cpu"}, "op1 | x", _tuning.Verdict("a", {"a": 1.0, "b": 2.0}))
    assert set(_tuning.TuningCache(path).verdicts("m")) == {"op1 | x", "op2 | x"}
    assert [p.name for p in tmp_path.iterdir()] == ["tuning.json"]  # no temporary file left


def test_an_unwritable_cache_keeps_the_verdict_for_the_process(tuned, tmp_path, monkeypatch, caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(_tuning, "cache", _tuning.TuningCache(blocker / "sub" / "tuning.json"))
    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    with caplog.at_level(logging.WARNING, logger="sam2_fast.ops._tuning"):
        assert op.select(X).name == "b"
        assert op.select(X).name == "b"
    assert calls["a"] == 1 + _tuning.ROUNDS


def test_the_cache_folder_comes_from_the_environment_or_the_user_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(_tuning.ENV_CACHE_DIR, str(tmp_path))
    assert _tuning.default_cache_path() == tmp_path / "tuning.json"
    monkeypatch.delenv(_tuning.ENV_CACHE_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    path = _tuning.default_cache_path()
    assert path.name == "tuning.json" and "sam2-fast" in path.parts


@pytest.mark.parametrize("value, mode", [("0", "off"), ("off", "off"), ("1", "on"), ("remeasure", "remeasure")])
def test_the_environment_sets_the_mode(monkeypatch, value, mode) -> None:
    monkeypatch.setenv(_tuning.ENV_TUNE, value)
    assert _tuning.tuning_mode() == mode


def test_a_bad_mode_names_the_argument(monkeypatch, caplog) -> None:
    with pytest.raises(ValueError, match="tuning: expected True / False / 'remeasure'"):
        with tuning("sometimes"):
            pass
    monkeypatch.setenv(_tuning.ENV_TUNE, "sometimes")
    with caplog.at_level(logging.WARNING, logger="sam2_fast.ops._tuning"):
        assert _tuning.tuning_mode() == "on"
    assert "SAM2_FAST_TUNE" in caplog.text


def test_a_model_built_with_tune_false_measures_nothing(clock, cache_file, registry, monkeypatch) -> None:
    """``build_sam2(..., tune=False)``: its predictors run the built-in defaults even where the
    environment would measure; a bad value names the argument."""
    from sam2_fast import build_sam2

    monkeypatch.setenv(_tuning.ENV_TUNE, "1")
    model = build_sam2("sam2.1-hiera-tiny", None, device="cpu", tune=False)
    op, calls = make_op(clock, {"first": 3.0, "fast": 1.0})
    with model.compute_context():
        assert _tuning.tuning_mode() == "off"
        assert op.select(X).name == "first"
    assert calls == {"first": 0, "fast": 0}
    model.tune = "remeasure"
    with model.compute_context():
        assert _tuning.tuning_mode() == "remeasure"
    with pytest.raises(ValueError, match="tune: expected True / False / 'remeasure'"):
        build_sam2("sam2.1-hiera-tiny", None, device="cpu", tune="often")


def test_info_shows_the_cached_verdicts_and_measures_nothing(tuned, cache_file) -> None:
    from sam2_fast.info import collect_info, format_info

    op, calls = make_op(tuned, {"a": 2.0, "b": 1.0})
    op.select(X)
    before = dict(calls)
    info = collect_info()
    assert calls == before
    (key,) = [k for k in info["tuning"]["verdicts"] if k.startswith("fake_op")]
    assert info["tuning"]["verdicts"][key]["winner"] == "b"
    text = format_info(info)
    assert "measured choices" in text and "* b" in text and str(cache_file) in text
    rope = info["ops"]["rope_attention"]["cpu"]
    assert rope["selected"] in ("cpp", "blocked", "reference")  # planned, not measured
