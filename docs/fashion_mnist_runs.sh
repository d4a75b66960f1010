#!/usr/bin/env bash
# Regenerates docs/fashion_mnist.md: real Fashion-MNIST (offline from Debian's
# dataset-fashion-mnist), MLP 784-400-400, Adam 1e-3 cosine, batch 128,
# 5 epochs per step, seeds 0 1 2. About 40 minutes on 2 CPU cores.
#   bash docs/fashion_mnist_runs.sh [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-runs/fashion_mnist}
PY=${PY:-.venv/bin/python}
run() { "$PY" -m cil_jax.main --config configs/fashion_mnist.py "$@" > /dev/null; }

for seed in 0 1 2; do
  for split in 9+1 8+2 5+5; do
    k=${split%+*}
    old=$(seq -s, 0 $((k - 1))); new=$(seq -s, $k 9)
    groups="(($old,),($new,))"
    wd=$RUNS/single_${split}/seed_$seed
    # finetune, LwF, eps-KD (auto eps, all layers) and joint share one C_A.
    run --workdir "$wd/methods" --config.seed=$seed \
        --config.classes.groups="$groups" \
        --config.methods=eps_kd,lwf,finetune,joint
    # The other layer presets add the same new classes to that C_A.
    for layers in head new_rows adapter; do
      "$PY" -m cil_jax.main --config configs/fashion_mnist.py \
          --config.teacher.checkpoint="$wd/methods/base/step_0/classifier" \
          --workdir "$wd/$layers" --config.seed=$seed \
          --config.classes.groups="(($new,),)" --config.methods=eps_kd \
          --config.eps_kd.layers=$layers > /dev/null
    done
  done
  run --workdir "$RUNS/five_steps/seed_$seed" --config.seed=$seed \
      --config.classes.groups="((0,1),(2,3),(4,5),(6,7),(8,9))" \
      --config.methods=eps_kd,lwf,finetune,joint
done
"$PY" -m cil_jax.summarize --out docs/fashion_mnist.md "$RUNS"
