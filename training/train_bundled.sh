#!/usr/bin/env bash
# One GPU window for the bundled model (e2diffsr_core/weights/e2diffsr_lite.pt): both stages of `lite`,
# warm-started from the last window's export (or the bundled weights), fp16 export, evaluation of the new
# model beside the bundled one on the validation pictures. Fits a 10-minute command: 7 minutes of training
# and about a minute of start-up, export and evaluation.
#
#   training/train_bundled.sh [DATA] [STAGE1_MINUTES] [STAGE2_MINUTES] [DEVICE]   (default 5 + 2 minutes)
#
# DATA defaults to data/samples (made by training/prepare_samples.py when missing; a GPU machine without
# network needs DATA/train, DATA/val and DATA/split.json copied there, about 24 MB). Each window writes
# RUNS/window-<UTC time>/ and points RUNS/latest at it; the next window starts from RUNS/latest/e2diffsr_lite.pt.
# INIT=FILE starts from another model of the lite configuration, INIT=none from random weights.
# SETS="table.key=value ..." adds configuration overrides to both stages (e.g. smaller batches on a CPU).
# The stage split (5 + 2 minutes) and the cosine schedule (20 warm-up steps, then down to 0 at each stage's
# time limit) were chosen from equal-compute CPU runs (training/compare_recipes.py, see
# e2diffsr_core/weights/MODEL_CARD.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${1:-data/samples}
MIN1=${2:-5}
MIN2=${3:-2}
DEV=${4:-cuda}
RUNS=${RUNS:-runs}
BUNDLED=e2diffsr_core/weights/e2diffsr_lite.pt
if [ -z "${INIT:-}" ]; then
  INIT=$BUNDLED
  # the real folder, not the link: this window moves RUNS/latest when it is done
  if [ -f "$RUNS/latest/e2diffsr_lite.pt" ]; then INIT=$(cd "$RUNS/latest" && pwd -P)/e2diffsr_lite.pt; fi
fi
# the time limits end both stages (the config's max_steps would stop a fast GPU's stage 1 early)
ARGS=(--max-steps 1000000)
if [ "$INIT" != none ]; then ARGS+=(--init "$INIT"); fi
ARGS+=(--set 'stage1.lr_schedule="cosine"' --set stage1.warmup_steps=20)
ARGS+=(--set 'stage2.lr_schedule="cosine"' --set stage2.warmup_steps=20)
for kv in ${SETS:-}; do ARGS+=(--set "$kv"); done
RUN=$RUNS/window-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RUN"
echo "window $RUN: stage 1 ${MIN1} min, stage 2 ${MIN2} min, start: ${INIT}"

if [ ! -f "$DATA/split.json" ]; then
  "$PY" training/prepare_samples.py --out "$DATA"
fi
# No GAN term in so short a run: the discriminator would start from scratch every window.
"$PY" -m e2diffsr_core.train --config training/configs/lite.toml --stage 1 --data "$DATA" \
  --split "$DATA/split.json" --out "$RUN/s1" --max-minutes "$MIN1" --device "$DEV" "${ARGS[@]}" \
  --set stage1.disc_start=1000000
"$PY" -m e2diffsr_core.train --config training/configs/lite.toml --stage 2 --data "$DATA" \
  --split "$DATA/split.json" --out "$RUN/s2" --stage1 "$RUN/s1" --max-minutes "$MIN2" --device "$DEV" \
  "${ARGS[@]}"
"$PY" -m e2diffsr_core export --model "$RUN/s2/model.pt" --out "$RUN/e2diffsr_lite.pt" --half
echo "$INIT" > "$RUN/started_from.txt"
ln -sfn "$(basename "$RUN")" "$RUNS/latest"
"$PY" -m e2diffsr_core.evaluation --model "$RUN/e2diffsr_lite.pt" --model "$BUNDLED" --data "$DATA" \
  --split "$DATA/split.json" --subset val --scales 2,3.4,4,8 --out "$RUN/report" --device "$DEV"
echo "done in ${SECONDS} s; review $RUN/report.md, then copy $RUN/e2diffsr_lite.pt to e2diffsr_core/weights/" \
  "and update the model card"
