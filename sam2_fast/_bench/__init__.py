"""Benchmark tooling behind ``sam2-fast bench``, not part of the library API: the runner
(:mod:`.runner`) and the adapter to the official ``sam2`` package (:mod:`.official`, also used
by the parity tests and ``bench/``). Only the CLI's bench command imports it, inside its
functions."""

#: the benchmarks of ``sam2-fast bench``, in the order they run (here, not in the runner, so that
#: building the CLI's parser imports no torch)
BENCHMARKS = ("cold_start", "set_image", "predict", "amg", "video")
