#!/usr/bin/env bash
# Taitelbaum et al.'s study on Fashion-MNIST (configs/taitelbaum_sweep.py):
# runs the 744-run sweep, aggregates it, and redraws docs/taitelbaum's figures
# and table. About 42 minutes on 2 CPU cores. A rerun skips finished runs, so
# an interrupted sweep is continued by running this again.
#   bash launch/taitelbaum_sweep.sh [SWEEP_DIR] [python -m cil_jax.sweep flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-runs/taitelbaum_full}
PY=${PY:-.venv/bin/python}
"$PY" -m cil_jax.sweep --config configs/taitelbaum_sweep.py --workdir "$DIR" "${@:2}"
"$PY" -m cil_jax.sweep.aggregate --workdir "$DIR"
"$PY" docs/taitelbaum/figure.py --workdir "$DIR" --out docs/taitelbaum
cp "$DIR/summary.md" docs/taitelbaum/summary.md
