#!/usr/bin/env bash
# The objectness study: six arms x 5 seeds on the synthetic set, yolov4-tiny at 128 px, 300 training and
# 200 validation images, 120 epochs, bf16 autocast and channels_last. The budget: BCE's mAP50 over its last
# 20% of epochs moved by at most 0.008 for each of the 5 seeds, while 60 epochs stopped at 0.189 (the lr's
# decay, not a plateau of the model). Two runs side by side with one core each (--jobs 2) took 845 to 970 s on
# 2 cores with AMX when nothing else ran, so the 30 runs take about 4 h there. Resumable: run it again after a
# stop. Results in bench/ablation/objectness_e120/ablation.md; bench/ablation/objectness_report.py copies them
# beside this script with the BCE curves and the score histograms (the README's "The focal ablation").
# Arguments are passed to ablate.py (--report: the tables from the runs there).
# shapes.yaml's recipe of that time is pinned (yolov4-tiny, its anchors, no mosaic, EMA tau 200), so a rerun is the same sweep.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python tools/ablate.py --config shapes.yaml --seeds 5 --jobs 2 --out bench/ablation/objectness_e120 "$@" \
  shapes.num_train=300 shapes.num_val=200 shapes.num_test=0 shapes.width=128 shapes.height=128 model.input_size=128 \
  shapes.name=SHAPES_ABL128 "data.train_splits=[SHAPES_ABL128/train]" "data.val_splits=[SHAPES_ABL128/val]" \
  train.time_limit=0 train.epochs=120 train.eval_period=4 train.amp=bf16 train.channels_last=true data.workers=1 \
  model.name=yolov4-tiny model.anchors_path=model_data/shapes_anchors.txt data.mosaic=0.0 data.close_mosaic=0 train.ema_tau=200 \
  --arm bce \
  --arm bce_iou loss.obj_iou_target=1 \
  --arm focal_doc loss.focal_loss=true loss.focal_alpha=0.25 loss.focal_gamma=2 loss.focal_loss_ratio=10 loss.focal_normalize=mean \
  --arm focal_numpos loss.focal_loss=true loss.focal_alpha=0.5 loss.focal_gamma=2 loss.focal_loss_ratio=1 loss.focal_normalize=num_pos \
  --arm varifocal loss.focal_loss=true loss.focal_form=varifocal loss.focal_alpha=0.75 loss.focal_gamma=2 \
  --arm quality loss.focal_loss=true loss.focal_form=quality loss.focal_gamma=2
