#!/usr/bin/env bash
# The GPU run kit: the ONE command sent to the GPU machine (bench/gpu/README.md).
#
#   bash bench/gpu/run.sh              # on the GPU machine, .whl/ carried along (`make gpu-kit`)
#   bash bench/gpu/run.sh --rehearse   # here, on the CPU: the same script at tiny sizes
#   bash bench/gpu/run.sh --only 4,5   # rerun some steps (1 and 2 always run; cached when warm)
#
# Steps, each under its own time budget (timeout), each leaving its JSON under $OUT as soon as it
# ends (a time-out still returns what was done), the summary table printed last:
#   1 setup       environment record, wheel install (--target, PYTHONPATH), kit check
#   2 build       python -m actionlab.ops.build for the card's arch (sm_90 on an H100/H200)
#   3a pytest     pytest -m cuda (kernels vs the reference, fp16/bf16, torch.compile of a block)
#   3b smoke      every model family: one bf16-mixed train step + one eval step
#   4 kernels     bench/rubiks_shift.py --device cuda: fp32/fp16/bf16 as multiples of a clone
#   5 train_step  bench/train_step.py --device cuda: clips/s, peak memory, Tiny vs TSM-R50
#   6 loader      the datamodule on 16 workers (video, frames) vs the GPU train rate
#   7 train       python train.py trainer=gpu bf16-mixed, embedded dataset, 2 epochs
#   8 efficiency  bench/efficiency.py --device cuda, only where that file exists
# $OUT gets at most 8 files (the device tool returns no more): run.log + setup, verify,
# rubiks_shift, train_step, loader, train, efficiency .json. Scratch (wheels, data, runs, the
# extension build) lives in $GPU_KIT_WORK, never under $OUT.
#
# Budgets (BUDGETS below; reasoning in bench/gpu/README.md): the GPU ones sum to 540 s, and
# GPU_KIT_DEADLINE (default 540 s on the GPU) caps the whole script however the steps go, keeping
# 15 s for the summary.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
MODE=gpu
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) MODE=rehearse ;;
    --only) ONLY=",${2:?--only needs a list such as 4,5},"; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (use --rehearse, --only LIST)" >&2; exit 2 ;;
  esac
  shift
done

# Step budgets in seconds, GPU : rehearsal. GPU: the expected time on an H100/H200 host x ~1.3-1.6
# (bench/gpu/README.md derives each); they sum to 540. Rehearsal: the 2-core CPU machine at tiny
# sizes, loose (it debugs the script; its time is not a measurement).
BUDGETS="1:45:90 2:120:180 3a:45:120 3b:55:180 4:30:90 5:120:240 6:50:120 7:75:180 8:60:0"
budget() { local b; for b in $BUDGETS; do if [ "${b%%:*}" = "$1" ]; then
  if [ "$MODE" = gpu ]; then b=${b#*:}; echo "${b%%:*}"; else echo "${b##*:}"; fi; return; fi; done; echo 60; }

START=$(date +%s)
if [ "$MODE" = gpu ]; then DEADLINE=${GPU_KIT_DEADLINE:-540}; else DEADLINE=${GPU_KIT_DEADLINE:-1200}; fi
RESERVE=15
if [ -z "${OUT:-}" ]; then
  OUT=$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-out.XXXXXX")
  echo "run.sh: OUT is not set: writing the results to $OUT"
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/run.log
: > "$LOG"
if [ "$MODE" = gpu ]; then
  WORK=${GPU_KIT_WORK:-/tmp/actionlab-gpu-kit}
  PY=${PYTHON:-python3}
  export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$WORK/torch_ext}
else
  WORK=${GPU_KIT_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit-work.XXXXXX")}
  if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
  export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$ROOT/.torch_ext}
fi
mkdir -p "$WORK"
SITE=$WORK/site
export PYTHONUNBUFFERED=1 ACTIONLAB_DATA=$WORK/data WANDB_MODE=disabled
REPORT="$PY bench/gpu/report.py"

log() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(( $(date +%s) - START )); }
wanted() { [ -z "$ONLY" ] || [[ "$ONLY" == *",$1,"* ]]; }

# run_step ID NAME GROUP BUDGET COMMAND: the command under min(BUDGET, time left), its output in
# run.log, then its status into $OUT/GROUP.json. Sets STEP_RC.
run_step() {
  local id=$1 name=$2 group=$3 budget=$4 cmd=$5
  local left=$(( DEADLINE - RESERVE - $(elapsed) )) limit=$budget status reason=""
  if [ "$left" -lt "$budget" ]; then limit=$left; fi
  if [ "$limit" -lt 5 ]; then
    log "== step $id $name: SKIPPED (no time left: $(elapsed) s of the ${DEADLINE} s deadline used)"
    $REPORT mark "$OUT/$group.json" --step "$id" --name "$name" --status skipped --budget "$budget" \
      --reason "no time left before the ${DEADLINE} s deadline" ${MODE_FLAG:-}
    STEP_RC=125; return
  fi
  log "== step $id $name (budget ${limit} s, at $(elapsed) s): $cmd"
  local t0=$(date +%s.%N)
  { timeout -k 10 "$limit" bash -o pipefail -c "$cmd"; echo $? > "$WORK/rc"; } 2>&1 | tee -a "$LOG"
  STEP_RC=$(cat "$WORK/rc")
  local secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
  case "$STEP_RC" in
    0) status=ok ;;
    124|137) status=timeout; reason="over its ${limit} s budget" ;;
    *) status=failed; reason="exit status $STEP_RC" ;;
  esac
  $REPORT mark "$OUT/$group.json" --step "$id" --name "$name" --status "$status" --seconds "$secs" \
    --budget "$limit" --rc "$STEP_RC" ${reason:+--reason "$reason"} ${MODE_FLAG:-}
  log "== step $id $name: $status in ${secs} s"
}

skip_step() {  # ID NAME GROUP REASON
  log "== step $1 $2: SKIPPED ($4)"
  $REPORT mark "$OUT/$3.json" --step "$1" --name "$2" --status skipped --reason "$4"
}

log "run.sh: mode $MODE, python $PY, OUT=$OUT, scratch $WORK, deadline ${DEADLINE} s, $(date -u +%FT%TZ)"

# ---- 1 setup: environment, wheels, kit check -----------------------------------------------------
MODE_FLAG="--mode $MODE"
if [ "$MODE" = gpu ]; then
  # torch finds CUDA_HOME from nvcc's path, which is wrong where nvcc is a wrapper in /usr/local/bin.
  if [ -z "${CUDA_HOME:-}" ]; then
    for c in "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")" /usr/local/cuda; do
      if [ -x "$c/bin/nvcc" ] && ls "$c"/lib64/libcudart.so* >/dev/null 2>&1; then export CUDA_HOME=$c; break; fi
    done
  fi
  INSTALL_FLAGS=""
  ENV_FLAGS="--expect-gpu"
  CHECK="bench/gpu/kit.py check --installed --json $WORK/kit.json"
else
  ENV_FLAGS=""
  # The wheels are for CPython 3.12; another interpreter installs them with 3.12's tag rules
  # (proving they install there) but cannot import their binaries, so its own venv serves.
  if "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    INSTALL_FLAGS=""
    CHECK="bench/gpu/kit.py check --installed --json $WORK/kit.json"
  else
    INSTALL_FLAGS="--python-version 3.12 --implementation cp --only-binary=:all: $(for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64; do printf -- '--platform %s ' $p; done)"
    CHECK="bench/gpu/kit.py check --json $WORK/kit.json"
  fi
fi
STAMP=$SITE/.kit-stamp
WHEELS_ID=$(ls .whl/*.whl 2>/dev/null | sort | tr '\n' ' ')
SETUP_CMD="set -e
$PY bench/gpu/env.py --out $OUT/setup.json $ENV_FLAGS
ls .whl/*.whl >/dev/null 2>&1 || { echo 'no wheels in .whl/: run \`make gpu-kit\` here and carry .whl' >&2; exit 3; }
if [ \"\$(cat $STAMP 2>/dev/null)\" = \"$WHEELS_ID\" ]; then echo 'wheels already installed in $SITE'; else
  rm -rf $SITE && $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $SITE $INSTALL_FLAGS .whl/*.whl 2>&1 | grep -v '^WARNING: Location' || true
  ls $SITE | grep -q dist-info || { echo 'wheel install failed' >&2; exit 4; }
  echo '$WHEELS_ID' > $STAMP; echo \"installed \$(ls -d $SITE/*.dist-info | wc -l) wheels into $SITE\"; fi
$PY $CHECK"
if [ "$MODE" = gpu ] || [ -z "$INSTALL_FLAGS" ]; then
  export PYTHONPATH=$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
else
  export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
fi
run_step 1 setup setup "$(budget 1)" "$SETUP_CMD"
SETUP_RC=$STEP_RC
$REPORT merge "$OUT/setup.json" kit "$WORK/kit.json"
if [ "$SETUP_RC" != 0 ]; then
  log "run.sh: setup failed (exit $SETUP_RC): the other steps cannot run without the kit"
fi
MODE_FLAG=""

# Data for steps 6 and 7 is made in the background while the extension builds (CPU encoding, not
# measured): the loader bench's videos and the embedded dataset.
if [ "$MODE" = gpu ]; then
  LOADER_DATA="--videos 12 --seconds 6"; SYNTH=""
  TRAIN_ARGS="trainer=gpu trainer.precision=bf16-mixed trainer.max_epochs=2 logger=csv data.num_workers=8"
else
  LOADER_DATA="--videos 2 --seconds 1"
  SYNTH="data.annotations.num_train=32 data.annotations.num_val=16 data.annotations.min_frames=10 data.annotations.max_frames=12"
  TRAIN_ARGS="trainer=cpu trainer.precision=bf16-mixed trainer.max_epochs=1 logger=csv data.num_workers=2 $SYNTH"
fi
BG_PID=""
rm -f "$WORK/prepare.rc"
if [ "$SETUP_RC" = 0 ] && { wanted 6 || wanted 7; }; then
  ( nice -n 10 $PY bench/gpu/loader.py --prepare-only --root "$WORK/loader" $LOADER_DATA > "$WORK/prepare.log" 2>&1 &&
    nice -n 10 $PY -c "import sys, hydra; from hydra import compose, initialize_config_dir; import actionlab
from actionlab.profile import config_dir
with initialize_config_dir(str(config_dir()), version_base='1.3'):
    cfg = compose('train', overrides=sys.argv[1:])
hydra.utils.instantiate(cfg.data).prepare_data()
print('embedded dataset ready in', cfg.data.root)" "paths.root_dir=$ROOT" $SYNTH >> "$WORK/prepare.log" 2>&1
    echo $? > "$WORK/prepare.rc" ) &
  BG_PID=$!
fi
# Steps 6 and 7 start by waiting for that job (inside their budgets: a slow preparation shows there).
WAIT_DATA="while [ ! -f $WORK/prepare.rc ]; do sleep 0.5; done; cat $WORK/prepare.log;
  grep -qx 0 $WORK/prepare.rc || { echo 'run.sh: data preparation failed (log above)' >&2; exit 5; }"

# ---- 2 build ---------------------------------------------------------------------------------------
if [ "$SETUP_RC" = 0 ]; then
  if [ "$MODE" = gpu ]; then
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')}
  fi
  run_step 2 build setup "$(budget 2)" "$PY -m actionlab.ops.build 2>&1 | tee $WORK/build.log"
  BUILD_LINE=$(grep -E 'kernels ready|build FAILED' "$WORK/build.log" 2>/dev/null | tail -1 | sed 's/"/\\"/g')
  $REPORT note "$OUT/setup.json" build "{\"line\": \"${BUILD_LINE}\", \"arch\": \"${TORCH_CUDA_ARCH_LIST:-cpu}\", \"cuda_home\": \"${CUDA_HOME:-}\"}"
else
  skip_step 2 build setup "setup failed"
fi

if [ "$SETUP_RC" != 0 ]; then
  for s in "3a pytest verify" "3b smoke verify" "4 kernels rubiks_shift" "5 train_step train_step" "6 loader loader" "7 train train"; do
    set -- $s; skip_step "$1" "$2" "$3" "setup failed"
  done
else
  # ---- 3 verify: pytest -m cuda, then every family's smoke ------------------------------------------
  if wanted 3a; then
    # Only the modules holding cuda tests are collected: the others would only be imported to be
    # deselected, and one importing a package the kit does not carry (nbclient...) would fail
    # collection and stop the whole run (kit.py refuses such a module with cuda tests).
    run_step 3a pytest verify "$(budget 3a)" "IGNORES=\$($PY bench/gpu/kit.py pytest-ignores) && echo \"left out: \$IGNORES\" &&
      $PY -m pytest -m cuda -q -p no:cacheprovider --junitxml=$WORK/junit.xml \$IGNORES tests"
    $REPORT junit "$OUT/verify.json" pytest "$WORK/junit.xml"
  fi
  if wanted 3b; then
    if [ "$MODE" = gpu ]; then
      SMOKE="--device cuda"
    else  # every family runs on CPU in the test suite; here only the script's two code paths
      SMOKE="--device cpu --frames 4 --crop 48 --batch 2 --models rubiks_tiny x3d_xs"
    fi
    run_step 3b smoke verify "$(budget 3b)" "$PY bench/gpu/smoke.py $SMOKE --out $WORK/smoke.json"
    $REPORT merge "$OUT/verify.json" smoke "$WORK/smoke.json"
  fi

  # ---- 4 kernels ---------------------------------------------------------------------------------------
  if wanted 4; then
    if [ "$MODE" = gpu ]; then KERN="--device cuda"; else KERN="--device cpu --quick --batch 1 --repeats 2"; fi
    run_step 4 kernels rubiks_shift "$(budget 4)" "$PY bench/rubiks_shift.py $KERN --out $OUT/rubiks_shift.json"
  fi

  # ---- 5 train steps -----------------------------------------------------------------------------------
  if wanted 5; then
    if [ "$MODE" = gpu ]; then
      TS="--device cuda --warmup 3 --steps 8"
    else
      TS="--device cpu --cases gpu --models rubiks_tiny tsm_r50 --frames 4 --crop 32 --cpu-batch 2 --warmup 1 --steps 1 --precision bf16-mixed --memory-format auto"
    fi
    run_step 5 train_step train_step "$(budget 5)" "$PY bench/train_step.py $TS --out $OUT/train_step.json"
  fi

  # ---- 6 loader vs the GPU -------------------------------------------------------------------------------
  if wanted 6; then
    if [ "$MODE" = gpu ]; then LD="--workers 16"; else LD="--workers 2 --batches-per-worker 2"; fi
    run_step 6 loader loader "$(budget 6)" "$WAIT_DATA
      $PY bench/gpu/loader.py --root $WORK/loader $LOADER_DATA $LD --train-step $OUT/train_step.json --out $OUT/loader.json"
  fi

  # ---- 7 the default training on the GPU --------------------------------------------------------------------
  if wanted 7; then
    rm -rf "$WORK/train_run"
    run_step 7 train train "$(budget 7)" "$WAIT_DATA
      $PY train.py $TRAIN_ARGS hydra.run.dir=$WORK/train_run"
    $REPORT note "$OUT/train.json" command "\"python train.py $TRAIN_ARGS\""
    $REPORT train-metrics "$WORK/train_run" --out "$OUT/train.json"
  fi

  # ---- 8 efficiency (after the lead's merge) ---------------------------------------------------------------
  if wanted 8; then
    if [ ! -f bench/efficiency.py ]; then
      skip_step 8 efficiency efficiency "bench/efficiency.py does not exist in this tree"
    elif [ "$MODE" != gpu ]; then
      skip_step 8 efficiency efficiency "rehearsal: bench/efficiency.py runs on the GPU only (its CPU cost is its owner's)"
    else
      EFF_OUT=""; if $PY bench/efficiency.py --help 2>/dev/null | grep -q -- '--out'; then EFF_OUT="--out $OUT/efficiency.json"; fi
      run_step 8 efficiency efficiency "$(budget 8)" "$PY bench/efficiency.py --device cuda $EFF_OUT"
      if [ -z "$EFF_OUT" ] && [ -f bench/results/efficiency.json ]; then
        $REPORT merge "$OUT/efficiency.json" result bench/results/efficiency.json
      fi
    fi
  fi
fi
if [ -n "$BG_PID" ]; then kill "$BG_PID" 2>/dev/null; wait "$BG_PID" 2>/dev/null; fi

# ---- summary -------------------------------------------------------------------------------------------------
FILES=$(find "$OUT" -type f | wc -l)
if [ "$FILES" -gt 8 ]; then
  log "run.sh: WARNING: $FILES files under $OUT; the device tool returns only 8"
fi
$REPORT summary "$OUT" 2>&1 | tee -a "$LOG"
RC=${PIPESTATUS[0]}
log "run.sh: done in $(elapsed) s (deadline ${DEADLINE} s); $FILES files in $OUT"
exit "$RC"
