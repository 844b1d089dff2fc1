"""Benchmark tooling behind ``sam2-fast bench``, not part of the library API: the runner
(:mod:`.runner`) and the adapter to the official ``sam2`` package (:mod:`.official`, also used
by the parity tests and ``bench/``). Only the CLI's bench command imports it, inside its
functions."""
