#!/usr/bin/env bash
# The recipe trials in float32 (train.amp=off): the decisive arms of bench/recipe/trials.sh, now against
# shapes.yaml's recipe as it is (the bfloat16 winner, combined_tiny3l), for CPUs without bfloat16 instructions.
# In float32 an epoch of the demo costs about twice what it does in bfloat16 (bench/README.md), so a 15-minute
# run fits about 9 epochs (about 450 updates) instead of 24: the best input size and EMA tau may differ.
# 15 minutes of training each (train.time_limit=15), 2 seeds, one run at a time, nothing else on the machine.
# Resumable like trials.sh (run it again after a stop). ARMS="default ema_tau150" runs only the arms named
# (default among them: it is the baseline); --report as in trials.sh.
# Arms:
#   ema_tau150   the EMA's tau at about a third of the run's updates, the rule shapes.yaml states
#   size192      192 px (tiny3l anchors from tools/kmeans_anchors.py at 192): about 1.8x the epochs
#   size160      160 px (tiny3l anchors at 160): about 2.5x the epochs
# Folder: bench/recipe/trials_15min_fp32/<machine>/ (text results committed as runs finish).
# train.float32_overrides=[] pins the baseline: shapes.yaml's float32 recipe (what these trials chose) stays off.
set -euo pipefail
cd "$(dirname "$0")/../.."
cpu="$(lscpu | sed -n 's/^Model name: *//p') / $(nproc) cores"
slug="$(tr 'A-Z' 'a-z' <<< "$cpu" | sed -E 's/\([^)]*\)//g; s/[^a-z0-9]+/-/g; s/^-//; s/-$//')"
OUT=bench/recipe/trials_15min_fp32/$slug
mkdir -p "$OUT"
echo "$cpu" > "$OUT/machine.txt"
lscpu | grep -o -E 'avx512f|avx512_bf16|amx_bf16|avx2' | sort -u | tr '\n' ' ' > "$OUT/isa.txt"
if [[ -n ${ARMS:-} && " $ARMS " != *" default "* ]]; then
  echo "error: ARMS must name default (the baseline the others are compared with)" >&2
  exit 1
fi
arms=()
arm() {  # an arm: its name and its overrides, kept where ARMS is unset or names it
  if [[ -z ${ARMS:-} || " $ARMS " == *" $1 "* ]]; then arms+=(--arm "$@"); fi
}
arm default
arm ema_tau150 train.ema_tau=150
arm size192 model.input_size=192 model.anchors_path=bench/recipe/shapes_anchors_tiny3l_192.txt
arm size160 model.input_size=160 model.anchors_path=bench/recipe/shapes_anchors_tiny3l_160.txt
exec python tools/ablate.py --config shapes.yaml --seeds 2 --jobs 1 --out "$OUT" train.amp=off "train.float32_overrides=[]" \
  train.time_limit=15 "$@" \
  "${arms[@]}"
