#!/usr/bin/env bash
# The short-budget recipe trials: one change at a time against the demo's recipe before them (BASELINE below:
# shapes.yaml's values then, pinned here, so the trials stay the same now that shapes.yaml has the winners), on the
# demo's set, 15 minutes of training each (train.time_limit=15), 2 seeds, one run at a time: a time-limited run must
# have the machine to itself, so nothing else may run beside it. 22 arms x 2 seeds x ~16 min is about 12 h;
# resumable (run it again after a stop: finished runs are skipped, a stopped one resumes with its time left).
# ARMS="default combined" bash bench/recipe/trials.sh runs only the arms named (default first: it is the baseline).
# The folder's ablation.* then report only those arms: to tabulate every finished arm, name them all with --report
# (ARMS="default combined ..." bash bench/recipe/trials.sh --report runs nothing).
# The input-size arms and tiny3l (a stride-8 output for the small shapes) use anchors from tools/kmeans_anchors.py
# at that size and count, as a user would. "combined" is the seed-0 winners together (256 px, mosaic, EMA tau 500);
# "combined_tiny3l" is combined with the tiny3l model (anchors for 9 at 256).
# Figures compare only within one machine: each machine (CPU model and cores) has its own folder,
# bench/recipe/trials_15min/<machine>/. The runs' text results there (result.json, config.yaml, results.csv,
# logs/, ablation.*) are meant to be committed as runs finish; weights and pictures are git-ignored.
# Results: <folder>/ablation.md (per arm mean +- std and the paired difference from "default");
# python bench/recipe/report.py --trials <folder> makes the table for bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
cpu="$(lscpu | sed -n 's/^Model name: *//p') / $(nproc) cores"
slug="$(tr 'A-Z' 'a-z' <<< "$cpu" | sed -E 's/\([^)]*\)//g; s/[^a-z0-9]+/-/g; s/^-//; s/-$//')"
OUT=bench/recipe/trials_15min/$slug
mkdir -p "$OUT"
echo "$cpu" > "$OUT/machine.txt"
if [[ -n ${ARMS:-} && " $ARMS " != *" default "* ]]; then
  echo "error: ARMS must name default (the baseline the others are compared with)" >&2
  exit 1
fi
# the demo's recipe the trials started from: 160 px, no mosaic, EMA tau 200 (every arm starts from it)
BASELINE=(model.name=yolov4-tiny model.input_size=160 model.anchors_path=model_data/shapes_anchors.txt data.mosaic=0.0 data.close_mosaic=0
          train.ema_tau=200)
arms=()
arm() {  # an arm: its name and its overrides, kept where ARMS is unset or names it
  if [[ -z ${ARMS:-} || " $ARMS " == *" $1 "* ]]; then arms+=(--arm "$@"); fi
}
arm default
arm combined model.input_size=256 model.anchors_path=bench/recipe/shapes_anchors_256.txt \
  data.mosaic=0.5 data.close_mosaic=5 train.ema_tau=500
arm size128 model.input_size=128 model.anchors_path=bench/recipe/shapes_anchors_128.txt
arm size192 model.input_size=192 model.anchors_path=bench/recipe/shapes_anchors_192.txt
arm size256 model.input_size=256 model.anchors_path=bench/recipe/shapes_anchors_256.txt
arm size320 model.input_size=320 model.anchors_path=bench/recipe/shapes_anchors_320.txt
arm mosaic data.mosaic=0.5 data.close_mosaic=5
arm mosaic_mixup data.mosaic=0.5 data.mixup=0.1 data.close_mosaic=5
arm scale_wide "data.scale=[0.5, 1.5]"
arm scale_narrow "data.scale=[0.9, 1.1]"
arm lr_high train.lr=0.004
arm lr_low train.lr=0.001
arm warmup3 train.warmup_epochs=3
arm single_anchor loss.multi_anchor_iou=null
arm ema_tau100 train.ema_tau=100
arm ema_tau500 train.ema_tau=500
arm ema_tau2000 train.ema_tau=2000
arm batch8 train.batch_size=8 train.nominal_batch=8
arm batch32 train.batch_size=32 train.nominal_batch=32
arm bce_iou loss.obj_iou_target=1
arm tiny3l model.name=yolov4-tiny-3l model.anchors_path=bench/recipe/shapes_anchors_tiny3l_160.txt
arm combined_tiny3l model.name=yolov4-tiny-3l model.input_size=256 model.anchors_path=bench/recipe/shapes_anchors_tiny3l_256.txt \
  data.mosaic=0.5 data.close_mosaic=5 train.ema_tau=500
exec python tools/ablate.py --config shapes.yaml --seeds 2 --jobs 1 --out "$OUT" "${BASELINE[@]}" train.time_limit=15 "$@" \
  "${arms[@]}"
