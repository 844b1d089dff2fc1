"""Shared setup for the pytest-benchmark suites.

Run from the repository root with the package installed::

    pytest bench --benchmark-group-by=group --benchmark-columns=mean,stddev,rounds

Every suite puts this project and its reference (the official package, or the torch
reference of an op) in the same benchmark group so their ratio is read from one run.
"""

from __future__ import annotations

import sys
from pathlib import Path

# the oracle helpers live with the parity tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "parity"))
