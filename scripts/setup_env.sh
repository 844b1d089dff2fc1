#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install sam2-fast into it.
#
#   bash scripts/setup_env.sh          # runtime: torch + sam2-fast (with its C++/CUDA extension)
#   bash scripts/setup_env.sh --test   # + test tools and the official sam2 1.1.0 package (the oracle)
#
# Environment:
#   VENV=path                  where the environment lives (default .venv)
#   PYTHON=python3.11          interpreter used to create it
#   SAM2_FAST_TORCH="torch==2.14.1"   the torch requirement (the CUDA 13 build also runs on CPU)
#   SAM2_FAST_BUILD_EXT=0      install without compiling anything (pure Python)
#   SAM2_FAST_BUILD_CUDA=auto|0|1     build the CUDA ops (auto: when nvcc and a CUDA torch exist)
set -euo pipefail
cd "$(dirname "$0")/.."

WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
TORCH_REQ=${SAM2_FAST_TORCH:-torch==2.14.1}
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "==> creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=(pip_quiet install --quiet)
# pip warns about every missing entry of the machine's local package indexes; hide that noise
pip_quiet() { "$PY" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

echo "==> torch ($TORCH_REQ)"
if [[ $WITH_TEST == 1 ]]; then
  # the oracle needs torchvision; 0.29.1 pairs with torch 2.14.1
  "${PIP[@]}" "$TORCH_REQ" "${SAM2_FAST_TORCHVISION:-torchvision==0.29.1}"
else
  "${PIP[@]}" "$TORCH_REQ"
fi
"${PIP[@]}" "setuptools>=64" wheel "pybind11>=2.12" "cmake>=3.24" ninja

# The CUDA 13 build of torch ships the CUDA headers its own headers include (cusparse.h, ...)
# in site-packages/nvidia/cu13/include; point the compiler at the toolkit behind nvcc.
if [[ -z "${CUDA_HOME:-}" ]] && command -v nvcc >/dev/null 2>&1; then
  NVCC_REAL=$(sed -n 's/^exec \(.*\/bin\/nvcc\).*/\1/p' "$(command -v nvcc)" | head -n1)
  [[ -n "$NVCC_REAL" ]] || NVCC_REAL=$(readlink -f "$(command -v nvcc)")
  export CUDA_HOME=$(dirname "$(dirname "$NVCC_REAL")")
fi

echo "==> sam2-fast (build: ext=${SAM2_FAST_BUILD_EXT:-1}, cuda=${SAM2_FAST_BUILD_CUDA:-auto}${CUDA_HOME:+, CUDA_HOME=$CUDA_HOME})"
start=$(date +%s)
if [[ $WITH_TEST == 1 ]]; then
  "${PIP[@]}" --no-build-isolation ".[test]"
else
  "${PIP[@]}" --no-build-isolation .
fi
echo "    built and installed in $(( $(date +%s) - start ))s"

# the browser test of `sam2-fast serve` drives Debian's Chromium through Playwright (which
# cannot download its own browser build on these machines)
if [[ $WITH_TEST == 1 && ! -x /usr/bin/chromium && $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "==> chromium (Debian's, for tests/test_serve_browser.py)"
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "warning: chromium could not be installed; tests/test_serve_browser.py will fail in CI" >&2
  fi
  rm -f "$log"
fi

if [[ $WITH_TEST == 1 ]] && ! "$PY" -c "import sam2" >/dev/null 2>&1; then
  echo "==> official sam2 1.1.0 (the test oracle, CPU build)"
  tmp=$(mktemp -d)
  SAM2_BUILD_CUDA=0 pip_quiet download --quiet --no-deps --no-build-isolation sam2==1.1.0 -d "$tmp"
  "${PIP[@]}" hydra-core iopath
  SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation --no-deps "$tmp"/sam2-1.1.0.tar.gz
  rm -rf "$tmp"
fi
