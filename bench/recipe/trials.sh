#!/usr/bin/env bash
# The short-budget recipe trials: one change at a time against the demo's defaults (shapes.yaml as it is), on the
# demo's set, 15 minutes of training each (train.time_limit=15), 2 seeds, one run at a time: a time-limited run must
# have the machine to itself, so nothing else may run beside it. 20 arms x 2 seeds x ~16 min is about 10.5 h;
# resumable (run it again after a stop: finished runs are skipped, a stopped one resumes with its time left).
# The input-size arms and tiny3l (a stride-8 output for the small shapes) use anchors from tools/kmeans_anchors.py
# at that size and count, as a user would.
# Figures compare only within one machine: the script records the CPU and refuses to continue on another.
# Results: bench/recipe/trials_15min/ablation.md (per arm mean +- std and the paired difference from "default");
# python bench/recipe/report.py makes the table for bench/README.md (changes, per-seed figures, epochs, images/s, wins).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=bench/recipe/trials_15min
mkdir -p "$OUT"
cpu="$(lscpu | sed -n 's/^Model name: *//p') / $(nproc) cores"
if [[ -f $OUT/machine.txt && "$(cat "$OUT/machine.txt")" != "$cpu" ]]; then
  echo "error: these trials started on '$(cat "$OUT/machine.txt")', this is '$cpu'; move $OUT aside to start again here" >&2
  exit 1
fi
echo "$cpu" > "$OUT/machine.txt"
exec python tools/ablate.py --config shapes.yaml --seeds 2 --jobs 1 --out "$OUT" train.time_limit=15 "$@" \
  --arm default \
  --arm size128 model.input_size=128 model.anchors_path=bench/recipe/shapes_anchors_128.txt \
  --arm size192 model.input_size=192 model.anchors_path=bench/recipe/shapes_anchors_192.txt \
  --arm size256 model.input_size=256 model.anchors_path=bench/recipe/shapes_anchors_256.txt \
  --arm size320 model.input_size=320 model.anchors_path=bench/recipe/shapes_anchors_320.txt \
  --arm mosaic data.mosaic=0.5 data.close_mosaic=5 \
  --arm mosaic_mixup data.mosaic=0.5 data.mixup=0.1 data.close_mosaic=5 \
  --arm scale_wide "data.scale=[0.5, 1.5]" \
  --arm scale_narrow "data.scale=[0.9, 1.1]" \
  --arm lr_high train.lr=0.004 \
  --arm lr_low train.lr=0.001 \
  --arm warmup3 train.warmup_epochs=3 \
  --arm single_anchor loss.multi_anchor_iou=null \
  --arm ema_tau100 train.ema_tau=100 \
  --arm ema_tau500 train.ema_tau=500 \
  --arm ema_tau2000 train.ema_tau=2000 \
  --arm batch8 train.batch_size=8 train.nominal_batch=8 \
  --arm batch32 train.batch_size=32 train.nominal_batch=32 \
  --arm bce_iou loss.obj_iou_target=1 \
  --arm tiny3l model.name=yolov4-tiny-3l model.anchors_path=bench/recipe/shapes_anchors_tiny3l_160.txt
