#!/usr/bin/env bash
# Regenerates docs/methods.md and docs/methods/results.json: the
# rehearsal methods (er, icarl, agem, bic; they store old data) and the
# regularisation methods (ewc, si, mas) beside finetune, lwf and joint in
# class-incremental learning of 5 steps x 2 classes, on Fashion-MNIST (MLP
# 784-400-400, Adam 1e-3 cosine, batch 128, 5 epochs per step) and on
# scikit-learn's digits (MLP 64-256-256, Adam 1e-3 cosine, batch 64, 30
# epochs per step), seeds 0 1 2. One process per dataset and seed trains
# C_A once for all six methods. Seed 0 of both datasets runs first, so a
# partial run still covers both. Then each penalty's weight at 100 and
# 10,000 times its default, seed 0. The rehearsal methods run at memory
# sizes 200 and 2,000, one process per dataset, memory size and seed
# (C_A trained once for the three; bic in a process of its own, in
# <setting>_memory_<size>_bic; lucir, on a cosine head with its own C_A,
# in <setting>_memory_<size>_lucir), seed 0 of every setting first.
# REHEARSAL_RUNS (default "er,icarl,agem bic lucir") picks those processes.
# PARTS (default "rehearsal regularisation") picks the parts to run.
# Resumable: a finished run (its results.json present) is skipped, an
# unfinished one resumes; run at most one training process at a time.
#   nohup bash docs/methods/run.sh [RUNS_DIR] > methods.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/methods}
PY=${PY:-.venv/bin/python}
GROUPS_5X2="((0,1),(2,3),(4,5),(6,7),(8,9))"
METHODS=ewc,si,mas,finetune,lwf,joint
REHEARSAL=er,icarl,agem
REHEARSAL_RUNS=${REHEARSAL_RUNS:-"$REHEARSAL bic lucir"}
PARTS=${PARTS:-rehearsal regularisation}

config_of() {
  if [ "$1" = digits ]; then echo configs/default.py
  else echo configs/fashion_mnist.py; fi
}

# Trains the run of "$@" in $dir unless its results.json exists.
run_in() {
  local dir=$1; shift
  [ -f "$dir/results.json" ] && return 0
  mkdir -p "$(dirname "$dir")"
  echo "$(date -u +%FT%TZ) $dir"
  "$PY" -m cil_jax.main "$@" --config.outputs.plots=False \
      --workdir "$dir" > "$dir.log" 2>&1
}

if [[ " $PARTS " == *" rehearsal "* ]]; then
  for seed in ${SEEDS:-0 1 2}; do
    for dataset in fashion_mnist digits; do
      for size in 200 2000; do
        for methods in $REHEARSAL_RUNS; do
          suffix="" head=False
          [ "$methods" = bic ] && suffix=_bic
          [ "$methods" = lucir ] && suffix=_lucir head=True
          run_in "$RUNS/${dataset}_5x2_memory_$size$suffix/seed_$seed" \
              --config "$(config_of $dataset)" --config.seed=$seed \
              --config.classes.groups="$GROUPS_5X2" \
              --config.methods=$methods --config.memory.size=$size \
              --config.model.cosine_head=$head
        done
      done
    done
  done
  "$PY" docs/methods/report.py "$RUNS"
fi
[[ " $PARTS " == *" regularisation "* ]] || exit 0

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
# The penalty weights, seed 0: each method alone at 100 and 10,000 times
# its default (digits), and at 100 times (Fashion-MNIST).
for dataset in digits fashion_mnist; do
  config=configs/fashion_mnist.py factors="100"
  [ "$dataset" = digits ] && config=configs/default.py factors="100 10000"
  for method in ewc si mas; do
    default=$("$PY" -c "import sys; sys.path.insert(0, '.')
from cil_jax import config_files
print(config_files.load('$config').get_config()['$method'].weight)")
    for factor in $factors; do
      weight=$("$PY" -c "print(float($default) * $factor)")
      dir=$RUNS/${dataset}_5x2_weights/${method}_$weight/seed_0
      mkdir -p "$(dirname "$dir")"
      "$PY" -m cil_jax.main --config $config --config.seed=0 \
          --config.classes.groups="$GROUPS_5X2" --config.methods=$method \
          --config.$method.weight=$weight --config.outputs.plots=False \
          --workdir "$dir" > "$dir.log" 2>&1
    done
  done
done
"$PY" docs/methods/report.py "$RUNS"
