"""Hypothesis settings of the property-based tests in tests/fuzz, and the helpers they share
with the example-based tests.

Profiles (pick one with ``HYPOTHESIS_PROFILE=<name>``; the default is ``sam2_fast``):

* ``sam2_fast``: a few dozen examples per test so the folder runs in about a minute on two
  cores; no deadline (CPU time depends on what else the machine runs). With the environment
  variable ``CI`` set the examples are derandomized (the same every run) and the example
  database is off, so CI is reproducible and writes nothing.
* ``thorough``: ten times the examples, for a local bug hunt.

A failure prints the falsifying example and a ``@reproduce_failure`` blob.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

_IN_CI = bool(os.environ.get("CI"))
MAX_EXAMPLES = 40

settings.register_profile(
    "sam2_fast",
    deadline=None,
    max_examples=MAX_EXAMPLES,
    derandomize=_IN_CI,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
    **({"database": None} if _IN_CI else {}),
)
settings.register_profile("thorough", settings.get_profile("sam2_fast"), max_examples=10 * MAX_EXAMPLES)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "sam2_fast"))

# tests/ has no __init__.py: pytest puts each test file's own folder on sys.path. The oracles
# and tolerances of the example-based tests (tests/ops/test_*.py, tests/parity/*) are imported
# from there rather than written twice.
_TESTS = Path(__file__).resolve().parents[1]
for _folder in (_TESTS / "ops", _TESTS / "parity"):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))
