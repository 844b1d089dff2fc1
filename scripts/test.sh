#!/usr/bin/env bash
# Quick start 2/2: set up .venv with the test tools and the official sam2 oracle, run the tests.
# Extra arguments go to pytest (e.g. bash scripts/test.sh -k parity).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh --test
# run the installed package (not the source tree) from the repository root
set +e
"${VENV:-.venv}/bin/pytest" -q -p no:cacheprovider "$@"
status=$?
set -e
if [[ $status == 5 ]]; then
  echo "error: pytest collected no tests" >&2
fi
exit $status
