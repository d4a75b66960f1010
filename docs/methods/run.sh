#!/usr/bin/env bash
# Regenerates docs/methods.md and docs/methods/results.json: the
# regularisation methods (ewc, si, mas) beside finetune, lwf and joint in
# class-incremental learning of 5 steps x 2 classes, on Fashion-MNIST (MLP
# 784-400-400, Adam 1e-3 cosine, batch 128, 5 epochs per step) and on
# scikit-learn's digits (MLP 64-256-256, Adam 1e-3 cosine, batch 64, 30
# epochs per step), seeds 0 1 2. One process per dataset and seed trains
# C_A once for all six methods. Seed 0 of both datasets runs first, so a
# partial run still covers both.
#   nohup bash docs/methods/run.sh [RUNS_DIR] > methods.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/methods}
PY=${PY:-.venv/bin/python}
GROUPS_5X2="((0,1),(2,3),(4,5),(6,7),(8,9))"
METHODS=ewc,si,mas,finetune,lwf,joint

for seed in ${SEEDS:-0 1 2}; do
  for dataset in fashion_mnist digits; do
    config=configs/fashion_mnist.py
    [ "$dataset" = digits ] && config=configs/default.py
    dir=$RUNS/${dataset}_5x2/seed_$seed
    mkdir -p "$(dirname "$dir")"
    "$PY" -m cil_jax.main --config $config --config.seed=$seed \
        --config.classes.groups="$GROUPS_5X2" --config.methods=$METHODS \
        --config.outputs.plots=False --workdir "$dir" > "$dir.log" 2>&1
  done
done
"$PY" docs/methods/report.py "$RUNS"
