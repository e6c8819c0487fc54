#!/usr/bin/env bash
# Reproduce the bundled model (e2diffsr_core/weights/e2diffsr_lite.pt): both stages of `lite` on the
# deepforest/NEON pictures, fp16 export, evaluation on the validation pictures.
#
#   training/train_bundled.sh [DATA] [MINUTES_PER_STAGE] [DEVICE]
#
# DATA defaults to data/samples (made by training/prepare_samples.py when missing); the bundled model was
# trained with 2.2 minutes per stage on one H100 (see e2diffsr_core/weights/MODEL_CARD.md). Longer runs
# are what the model needs most.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${1:-data/samples}
MIN=${2:-2.2}
DEV=${3:-cuda}
RUNS=${RUNS:-runs}
if [ ! -f "$DATA/split.json" ]; then
  "$PY" training/prepare_samples.py --out "$DATA"
fi
"$PY" -m e2diffsr_core.train --config training/configs/lite.toml --stage 1 --data "$DATA" \
  --split "$DATA/split.json" --out "$RUNS/lite-s1" --max-minutes "$MIN" --device "$DEV" \
  --set stage1.disc_start=1000000
"$PY" -m e2diffsr_core.train --config training/configs/lite.toml --stage 2 --data "$DATA" \
  --split "$DATA/split.json" --out "$RUNS/lite-s2" --stage1 "$RUNS/lite-s1" --max-minutes "$MIN" --device "$DEV"
"$PY" -m e2diffsr_core export --model "$RUNS/lite-s2/model.pt" --out "$RUNS/e2diffsr_lite.pt" --half
"$PY" -m e2diffsr_core.evaluate --model "$RUNS/e2diffsr_lite.pt" --data "$DATA" --split "$DATA/split.json" \
  --subset val --scales 2,3.4,4,8 --out "$RUNS/report" --device "$DEV"
echo "review $RUNS/report.md, then copy $RUNS/e2diffsr_lite.pt to e2diffsr_core/weights/ and update the model card"
