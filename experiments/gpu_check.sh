#!/usr/bin/env bash
# One prepared measurement of cnnlab on a GPU (built for the H200 the `device` tool lends), in
# under 8 minutes of wall time, from a plain copy of the repository: no pip install, the
# repository on PYTHONPATH, the image's python3 (jax + CUDA plugin, flax, optax, orbax, absl,
# numpy; torch for the comparison). It
#   1. prints the device (nvidia-smi) and versions (jax.print_environment_info);
#   2. runs `python -m experiments.benchmark --suite=gpu` (cnnlab/bench/suite.py): two measured
#      ceilings, then ResNet-50 224^2 bfloat16 (params float32) at batch 256 (with PyTorch eager
#      AMP interleaved, same protocol as the CPU comparisons), 128 and 512, float32 at 256;
#      ResNet-18, VGG-16, GoogLeNet at one batch; resnet1d and r3d_18 when registered. Per case:
#      img/s, ms/step, compile s, device peak memory, XLA-counted FLOP/s, MFU against the dense
#      bf16 peak (989.4 TFLOP/s: NVIDIA's H100/H200 SXM datasheets give 1,979 with 2:4 sparsity)
#      and against the measured bf16 matrix-product ceiling;
#   3. with the wall time left, A/B trials of candidate XLA flags (suite.XLA_FLAG_CANDIDATES),
#      each alone in a fresh process on ResNet-50 bf16 b256 (GPU_CHECK_FLAG_TRIALS=0: none).
# Everything goes to $OUT: gpu_check.json (one report; trials appended to it) and gpu_check.log.
#
# The `device` tool's call (from the repository root here; nothing to carry unless the image
# lacks a module the benchmark imports: then see "Wheels" below and add carry [".whl"]):
#     run(command="bash experiments/gpu_check.sh", timeout_s=540)
# Wheels: the only module of the train-step path not in the H200 image (KINDS.md, 2026-11-17) is
# ml_collections (the engine's configs), when it is still imported. To carry it:
#     echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux2014_x86_64 -d .whl ml_collections==1.1.0
# (its requirements, absl-py and PyYAML, are in the image); this script installs .whl/*.whl
# into /tmp/cnnlab_site when the directory exists.
#
# On a CPU, GPU_CHECK_TINY=1 runs the same steps with the tiny suite in seconds (the test
# tests/test_gpu_check.py does so). Other knobs: GPU_CHECK_WALL_S (total wall budget, default
# 420 s), GPU_CHECK_TORCH_PYTHON (interpreter with torch; default python3), GPU_CHECK_PYTHON.
set -u
cd "$(dirname "$0")/.."
START=$(date +%s)
OUT=${OUT:-/tmp/cnnlab_gpu_check}
mkdir -p "$OUT"
PY=${GPU_CHECK_PYTHON:-python3}
TINY=${GPU_CHECK_TINY:-0}
WALL=${GPU_CHECK_WALL_S:-420}
LOG="$OUT/gpu_check.log"
JSON="$OUT/gpu_check.json"
: >"$LOG"
say() { echo "$@" | tee -a "$LOG"; }
elapsed() { echo $(( $(date +%s) - START )); }

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/cnnlab_site .whl/*.whl >>"$LOG" 2>&1 || { say "error: wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/cnnlab_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# Fail in one line, before any device work, when the train-step path cannot import here.
if ! "$PY" -c "import cnnlab.config, cnnlab.training.steps, cnnlab.bench.suite" >>"$LOG" 2>&1; then
  say "error: cnnlab's train-step path does not import with $PY (see $LOG); a missing wheel?"
  say "       carry it as the header of experiments/gpu_check.sh says"
  exit 2
fi
if [ "$TINY" = 1 ]; then
  SUITE=tiny
else
  SUITE=gpu
  # JAX takes 70% of the GPU's memory up front, leaving room for the PyTorch worker's case.
  export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.70}
  # A rerun on the same (still warm) machine reuses compiled steps; the report records it.
  export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/cnnlab_jax_cache}
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit \
    --format=csv 2>&1 | tee -a "$LOG"
fi
say "== gpu_check: suite=$SUITE wall budget ${WALL} s, $(date -u +%FT%TZ)"
"$PY" -c "import jax; print(jax.print_environment_info(return_string=True)); print(jax.devices())" \
  2>&1 | tee -a "$LOG"

# The suite gets the budget less a reserve for start-up and the last case's overrun.
BUDGET=$(( WALL - $(elapsed) - 70 ))
[ "$BUDGET" -lt 10 ] && BUDGET=10
timeout $(( WALL - $(elapsed) )) "$PY" -m experiments.benchmark --suite="$SUITE" \
  --suite_budget_s="$BUDGET" --json_out="$JSON" --compare=torch \
  --torch_python="${GPU_CHECK_TORCH_PYTHON:-python3}" 2>&1 | tee -a "$LOG"
RC=${PIPESTATUS[0]}
if [ "$RC" = 124 ]; then   # stopped by the wall budget (not the device tool's own limit)
  say "== the suite was stopped at the wall budget; the report holds the cases it finished"
  RC=3
fi
say "== suite exit status $RC after $(elapsed) s"

if [ "${GPU_CHECK_FLAG_TRIALS:-1}" = 1 ] && [ -f "$JSON" ]; then
  CASE=$([ "$TINY" = 1 ] && echo lenet5_bfloat16_b8 || echo resnet50_bfloat16_b256)
  if [ "$TINY" = 1 ]; then   # one flag XLA:CPU knows, to exercise the trial path
    FLAGS=--xla_cpu_enable_fast_math=false
  else
    FLAGS=$("$PY" -c "from cnnlab.bench import suite; print('\n'.join(suite.XLA_FLAG_CANDIDATES))")
  fi
  while IFS= read -r FLAG; do
    LEFT=$(( WALL - $(elapsed) ))
    if [ "$LEFT" -lt 90 ] && [ "$TINY" != 1 ]; then
      say "== no time left for XLA flag trial $FLAG ($LEFT s left)"; continue
    fi
    say "== XLA flag trial: $FLAG ($LEFT s left)"
    timeout "$LEFT" "$PY" -m experiments.benchmark --suite="$SUITE" --suite_cases="$CASE" \
      --xla_flags="$FLAG" --suite_trial_of="$JSON" 2>&1 | tee -a "$LOG"
    say "== trial exit status ${PIPESTATUS[0]}"
  done <<<"$FLAGS"
fi
if [ -f "$JSON" ]; then
  say "== summary"
  "$PY" -c "import json, sys; from cnnlab.bench import suite
print(suite.summary_table(json.load(open(sys.argv[1]))))" "$JSON" 2>&1 | tee -a "$LOG"
fi
say "== gpu_check done in $(elapsed) s; report: $JSON"
exit "$RC"
