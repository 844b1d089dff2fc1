#!/usr/bin/env bash
# Quick start 1/2: set up .venv and segment the bundled (generated) sample image.
# Writes demo_out/sample.png, demo_out/mask.png and demo_out/overlay.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
"${VENV:-.venv}/bin/sam2-fast" demo --out demo_out "$@"
