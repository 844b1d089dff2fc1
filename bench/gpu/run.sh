#!/usr/bin/env bash
# The GPU checks of sam2-fast in one command, for a lent GPU machine whose python3 already has
# torch, triton, pytest and pytest-benchmark (bench/gpu/README.md says how it was run):
#
#   bash bench/gpu/run.sh [all|second|ops|final|next|tune|rope|vos|amg|frame]   # results in $OUT (default /tmp/sam2_fast_gpu)
#
# all:  pure-Python editable install; the C++/CUDA extension built (sm_90) in a copy in the
#       background while the Triton kernels are checked and timed (check_kernels.py); then the
#       compiled CUDA ops, `pytest tests/ops` on the GPU, and the models against the official
#       package (check_models.py, needs the oracle and hydra on PYTHONPATH, e.g. .gpu_site/).
# second: the tile sweep, base-plus shapes, models with the measured defaults, a profile.
# ops: the ops' tests under pytest-xdist (a crashing test fails alone) and a backtrace.
# next: what changed since the last GPU run, kernels only (rope check + timing, window bf16
#       timing on the trunk shapes, both tile sweeps), under 9 minutes.
# tune: window_attention only: bf16 timed against SDPA on every trunk shape, then the tile sweep.
# rope: the rope_attention kernel only: checked against float64, timed, tiles x key splits swept.
# vos [MODE]: vos_optimized (torch.compile of the five components) against eager, tiny, 1 and 8
#       objects; MODE a torch.compile mode (max-autotune: with CUDA graphs, as the official VOS predictor).
# amg: the automatic mask generator against official (720x1280, 32x32 points), tiny and large.
# frame: the models with the per-call overhead in view (kept weight casts on/off, syncs, profile).
set -u
OUT=${OUT:-/tmp/sam2_fast_gpu}
mkdir -p "$OUT"
REPO=$(pwd)
export PYTHONUNBUFFERED=1
export PYTHONPATH="$REPO/.gpu_site${PYTHONPATH:+:$PYTHONPATH}"
T0=$(date +%s)
log() { echo "[$(($(date +%s) - T0)) s] $*"; }

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  python3 -c "import sys, torch, triton; print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name(0))"
  command -v nvcc && nvcc --version | tail -1
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

SAM2_FAST_BUILD_EXT=0 python3 -m pip install -q --no-build-isolation --no-deps --no-index -e . \
  > "$OUT/install.log" 2>&1 || { log "pure-Python install failed"; tail -20 "$OUT/install.log"; }
log "installed"

LOGS=/tmp/sam2_fast_gpu_logs
mkdir -p "$LOGS"

if [ "${1:-all}" = rope ]; then  # the rope_attention kernel: checked, timed, its tiles and splits swept
  timeout 500 python3 bench/gpu/check_kernels.py --out "$OUT/rope.md" --only ceilings,rope,rope_tune > "$LOGS/rope.log" 2>&1
  log "rope rc $?"
  cat "$OUT/rope.md"
  tail -5 "$LOGS/rope.log"
  exit 0
fi

if [ "${1:-all}" = next ]; then  # the kernel changes not yet timed on a GPU, in one call of < 9 min
  # most important first; each part appends to next.md, so a part cut by its timeout keeps
  # what the earlier ones measured
  K="python3 bench/gpu/check_kernels.py --out $OUT/next.md"
  timeout 150 $K --only ceilings,rope > "$LOGS/next_rope.log" 2>&1; log "rope rc $?"
  timeout 120 $K --only ceilings,window --window-dtypes bf16 > "$LOGS/next_window.log" 2>&1; log "window rc $?"
  timeout 130 $K --only rope_tune > "$LOGS/next_rope_tune.log" 2>&1; log "rope_tune rc $?"
  timeout 120 $K --only tune > "$LOGS/next_tune.log" 2>&1; log "tune rc $?"
  cat "$OUT/next.md"
  for f in "$LOGS"/next_*.log; do echo "== tail $f"; tail -3 "$f"; done
  exit 0
fi

if [ "${1:-all}" = tune ]; then
  timeout 500 python3 bench/gpu/check_kernels.py --out "$OUT/tune.md" --only ceilings,window,tune \
    --window-dtypes bf16 > "$LOGS/tune.log" 2>&1
  log "tune rc $?"
  cat "$OUT/tune.md"
  exit 0
fi

build() {
  rm -rf /tmp/sam2_fast_build /tmp/sam2_fast_wheel && mkdir -p /tmp/sam2_fast_build
  tar --exclude=./.gpu_site --exclude=./.git -cf - . | tar -xf - -C /tmp/sam2_fast_build
  cd /tmp/sam2_fast_build || return 1
  CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")") SAM2_FAST_BUILD_CUDA=1 SAM2_FAST_CUDA_ARCHS=90 \
    CMAKE_BUILD_PARALLEL_LEVEL=12 timeout 420 python3 -m pip wheel -v --no-build-isolation --no-deps \
    --no-index -w /tmp/sam2_fast_wheel . || return 1
  python3 - "$REPO" <<'EOF2'
import glob, sys, zipfile
wheel = zipfile.ZipFile(glob.glob("/tmp/sam2_fast_wheel/sam2_fast-*.whl")[0])
names = [n for n in wheel.namelist() if n.startswith("sam2_fast/_C") or n == "sam2_fast/_build_info.py"]
for name in names:
    wheel.extract(name, sys.argv[1])
print("extracted", names)
EOF2
}
build > "$LOGS/build.log" 2>&1 &
BUILD_PID=$!

if [ "${1:-all}" = ops ]; then  # the compiled ops' tests on the GPU, crash-tolerant (xdist workers)
  wait $BUILD_PID
  log "extension build rc $? ($(tail -1 "$LOGS/build.log"))"
  timeout 200 python3 -m pytest tests/ops -n 8 -q -k "not interpreter and not subprocess" \
    -p no:cacheprovider -rfE > "$OUT/pytest_ops.log" 2>&1
  log "pytest tests/ops rc $?"
  grep -E "FAILED|ERROR|crashed|passed|failed" "$OUT/pytest_ops.log" | tail -30
  cat > /tmp/crash.py <<'EOF3'
import torch
from sam2_fast._ext import load_extension
print(load_extension())
try:
    torch.ops.sam2_fast.rle_encode(torch.zeros(2, 8, 8))
except Exception as exc:
    print("rle_encode raised", type(exc).__name__, exc)
torch.ops.sam2_fast.connected_components(torch.zeros(1, 8, 8, dtype=torch.bool))
EOF3
  timeout 120 cuda-gdb -batch -ex run -ex bt --args python3 /tmp/crash.py > "$OUT/crash_bt.txt" 2>&1
  grep -v "^\[New Thread\|^\[Thread" "$OUT/crash_bt.txt" | tail -40
  exit 0
fi

if [ "${1:-all}" = final ]; then  # the C++ error-path fix and the retuned window tiles
  wait $BUILD_PID
  log "extension build rc $? ($(tail -1 "$LOGS/build.log"))"
  timeout 100 python3 -m pytest tests/ops/test_connected_components.py tests/ops/test_mask_ops.py -n 8 -q \
    -p no:cacheprovider -rfE > "$OUT/pytest_ops.log" 2>&1
  log "pytest compiled ops rc $?"
  grep -E "FAILED|ERROR|crashed|passed|failed" "$OUT/pytest_ops.log" | tail -12
  timeout 100 python3 bench/gpu/check_kernels.py --out "$OUT/kernels.md" --only window --window-dtypes bf16 \
    > "$LOGS/kernels.log" 2>&1
  log "window rc $?"
  grep "^|" "$OUT/kernels.md"
  exit 0
fi

if [ "${1:-all}" = vos ]; then  # vos_optimized: the compiled components against eager (bf16, 1 and 8 objects)
  wait $BUILD_PID
  log "extension build rc $? ($(tail -1 "$LOGS/build.log"))"
  timeout 500 python3 bench/gpu/check_models.py --out "$OUT/vos.md" --only vos --models sam2.1-hiera-tiny \
    --vos-mode "${2:-default}" \
    > "$LOGS/vos.log" 2>&1
  log "vos rc $?"
  tail -4 "$LOGS/vos.log"
  cat "$OUT/vos.md"
  exit 0
fi

if [ "${1:-all}" = amg ]; then  # the automatic mask generator against official, tiny and large
  wait $BUILD_PID
  log "extension build rc $? ($(tail -1 "$LOGS/build.log"))"
  timeout 420 python3 bench/gpu/check_models.py --out "$OUT/amg.md" --only amg > "$LOGS/amg.log" 2>&1
  log "amg rc $?"
  tail -4 "$LOGS/amg.log"
  cat "$OUT/amg.md"
  exit 0
fi

if [ "${1:-all}" = frame ]; then  # the per-frame CPU overhead: kept weight casts, syncs, profile
  wait $BUILD_PID
  log "extension build rc $? ($(tail -1 "$LOGS/build.log"))"
  timeout 360 python3 bench/gpu/check_models.py --out "$OUT/models.md" --only image,video,syncs,profile \
    > "$LOGS/models.log" 2>&1
  log "models rc $?"
  tail -4 "$LOGS/models.log"
  grep -v '^<!--' "$OUT/models.md" | head -150
  exit 0
fi

if [ "${1:-all}" = all ]; then
  KERNELS="ceilings,window,rope,mask"; MODELS="image,video"; WINDOW_DTYPES="bf16,fp16,fp32"
else  # second: the tile sweep, base-plus shapes, the new defaults and a profile
  KERNELS="ceilings,window,tune"; MODELS="image,video,profile"; WINDOW_DTYPES="bf16,fp16"
fi
timeout 300 python3 bench/gpu/check_kernels.py --out "$OUT/kernels.md" --only "$KERNELS" \
  --window-dtypes "$WINDOW_DTYPES" > "$LOGS/kernels.log" 2>&1
log "triton kernels rc $?"

wait $BUILD_PID
log "extension build rc $? ($(tail -1 "$LOGS/build.log"))"

timeout 90 python3 bench/gpu/check_kernels.py --out "$OUT/compiled.md" --only compiled > "$LOGS/compiled.log" 2>&1
log "compiled ops rc $?"

timeout 240 python3 -m pytest tests/ops -v --maxfail=30 -k "not interpreter and not subprocess" \
  -p no:cacheprovider -rfEs > "$OUT/pytest_ops.log" 2>&1
log "pytest tests/ops rc $? ($(tail -1 "$OUT/pytest_ops.log"))"

timeout 420 python3 bench/gpu/check_models.py --out "$OUT/models.md" --only "$MODELS" > "$LOGS/models.log" 2>&1
log "models rc $?"

for f in "$LOGS"/*.log; do echo "== tail $f"; tail -4 "$f"; done
cat "$OUT/kernels.md" "$OUT/compiled.md" "$OUT/models.md" 2>/dev/null | grep -v '^<!--'
grep -E "PASSED|FAILED|ERROR|Fatal|Segmentation|File " "$OUT/pytest_ops.log" | tail -25
