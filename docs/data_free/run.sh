#!/usr/bin/env bash
# Regenerates docs/data_free.md, docs/data_free/results.json and the figures:
# df_replay's ablation on Fashion-MNIST (MLP 784-400-400 with BatchNorm,
# Adam 1e-3 cosine, batch 128, 5 epochs per step) at 9+1, 8+2, 5+5 and
# 5 steps x 2, and on digits 5+5 (MLP 64-256-256 with BatchNorm, 30 epochs),
# seeds 0 1 2; df_replay on the plain MLP (no BatchNorm: logit-only
# inversion) at 8+2 and 5+5. One process per setting and seed trains C_A once
# for all its variants (--members). Seed 0 of every setting runs first, so
# a partial run still covers every setting. A setting whose runs all have
# their results.json is skipped, so the script can be rerun to go on. A
# second loop runs the variants of round 2 (members_round2.json).
# ROUNDS (default "1 2 3 4") picks the loops to run.
#   nohup bash docs/data_free/run.sh [RUNS_DIR] > data_free.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS=${1:-runs/data_free}
PY=${PY:-.venv/bin/python}
ROUNDS=" ${ROUNDS:-1 2 3 4} "
wants() { [[ "$ROUNDS" == *" $1 "* ]]; }

groups_of() {  # a setting's class groups
  case $1 in
    9+1) echo "((0,1,2,3,4,5,6,7,8),(9,))" ;;
    8+2) echo "((0,1,2,3,4,5,6,7),(8,9))" ;;
    5+5) echo "((0,1,2,3,4),(5,6,7,8,9))" ;;
    5x2) echo "((0,1),(2,3),(4,5),(6,7),(8,9))" ;;
  esac
}

# Round 1's recipe, spelt out: df_replay's defaults are now round 2's
# batch_stats=auto, eps=auto and synthesis started by the teacher's kind
# (inversion.init=auto: noise with BatchNorm, as round 1 always did).
ROUND1='"df_replay.batch_stats": "frozen", "df_replay.eps": "0.5", "df_replay.inversion.init": "noise"'

members_file() {  # members_file DIR NAME < JSON: writes DIR/NAME, prints it
  mkdir -p "$1"
  cat > "$1/$2"
  echo "$1/$2"
}

members() {  # the ablation: the recipe and each component changed alone
  local dir=$1
  members_file "$dir" members.json <<JSON
{"$dir/recipe": {"methods": "df_replay,eps_kd,finetune,joint", $ROUND1},
 "$dir/no_head_finetune": {"methods": "df_replay", $ROUND1,
                           "df_replay.head_finetune_steps": 0},
 "$dir/no_replay": {"methods": "df_replay", "df_replay.samples": 0,
                    "df_replay.head_finetune_steps": 0, $ROUND1},
 "$dir/ce_all": {"methods": "df_replay", "df_replay.ce_form": "all",
                 $ROUND1},
 "$dir/bn_trained": {"methods": "df_replay", "df_replay.eps": "0.5",
                     "df_replay.batch_stats": "train"},
 "$dir/no_weight_aligning": {"methods": "df_replay", $ROUND1,
                             "df_replay.weight_aligning": false}}
JSON
}

members_round2() {  # BatchNorm statistics mixed, and the one-recipe rules
  local dir=$1
  members_file "$dir" members_round2.json <<JSON
{"$dir/bn_mixed": {"methods": "df_replay", "df_replay.batch_stats": "mixed",
                   "df_replay.eps": "0.5"},
 "$dir/auto": {"methods": "df_replay", "df_replay.batch_stats": "auto",
               "df_replay.eps": "auto"},
 "$dir/auto_w2": {"methods": "df_replay", "df_replay.batch_stats": "auto",
                  "df_replay.eps": "auto", "df_replay.weight": 2.0}}
JSON
}

finished() {  # every run of a members file, or one workdir, has results
  local target=$1
  if [ -d "$target" ] && [ ! -f "$target/members.json" ]; then
    [ -f "$target/results.json" ]; return
  fi
  local members=${2:-members.json}
  [ -f "$target/$members" ] || return 1
  for wd in $(grep -o '"[^"]*": {' "$target/$members" | cut -d'"' -f2); do
    [ -f "$wd/results.json" ] || return 1
  done
}

for seed in 0 1 2; do
  wants 1 || break
  for split in 8+2 5+5 9+1 5x2; do
    dir=$RUNS/fashion_mnist_$split/seed_$seed
    finished "$dir" || "$PY" -m cil_jax.main --config configs/data_free.py \
        --config.seed=$seed \
        --config.classes.groups="$(groups_of $split)" \
        --members "$(members "$dir")" > "$dir.log" 2>&1
    plain=$RUNS/fashion_mnist_${split}_plain_mlp/seed_$seed
    if { [ "$split" = 8+2 ] || [ "$split" = 5+5 ]; } && ! finished "$plain"
    then
      "$PY" -m cil_jax.main --config configs/data_free.py \
          --config.seed=$seed --config.classes.groups="$(groups_of $split)" \
          --config.model.batch_norm=False --config.methods=df_replay,eps_kd \
          --config.df_replay.batch_stats=frozen --config.df_replay.eps=0.5 \
          --config.df_replay.inversion.init=noise --workdir "$plain" \
          > "$dir.plain.log" 2>&1
    fi
  done
  dir=$RUNS/digits_5+5/seed_$seed
  finished "$dir" || "$PY" -m cil_jax.main --config configs/default.py \
      --config.seed=$seed \
      --config.model.batch_norm=True --members "$(members "$dir")" \
      > "$dir.log" 2>&1
  "$PY" docs/data_free/report.py "$RUNS"
done

# Round 2 (issue 12, one recipe): BatchNorm statistics on mixed batches,
# and batch_stats=auto with eps=auto (k / (k + m)), alone and with replay
# weight 2; Fashion-MNIST only.
round_of_members() {  # round_of_members N: members_roundN on every
  local n=$1           # Fashion-MNIST setting and seed, seed 0 first
  for seed in 0 1 2; do
    for split in 8+2 5+5 9+1 5x2; do
      dir=$RUNS/fashion_mnist_$split/seed_$seed
      finished "$dir" "members_round$n.json" || "$PY" -m cil_jax.main \
          --config configs/data_free.py --config.seed=$seed \
          --config.classes.groups="$(groups_of $split)" \
          --members "$("members_round$n" "$dir")" > "$dir.round$n.log" 2>&1
    done
    "$PY" docs/data_free/report.py "$RUNS"
  done
}

if wants 2; then round_of_members 2; fi

# Round 3 (issue 12, item 4): a BatchNorm CNN for Fashion-MNIST (conv 16 and
# 32 channels, dense 64, BatchNorm after each), 2 epochs per step (on this
# CPU a CNN step costs about 10 times the MLP's), 1,024 synthetic inputs
# from 100 inversion steps; df_replay with configs/data_free.py's defaults
# spelt out, eps_kd and joint; 8+2 and 5+5 (CNN_SPLITS), seed 0 first.
CNN_FLAGS=(--config.model.name=cnn --config.model.batch_norm=True
           "--config.model.conv_features=(16,32)" --config.model.dense_size=64
           --config.train.epochs=2 --config.df_replay.samples=1024
           --config.df_replay.inversion.steps=100
           --config.df_replay.batch_stats=auto --config.df_replay.eps=auto)
for seed in 0 1 2; do
  wants 3 || break
  for split in ${CNN_SPLITS:-8+2 5+5}; do
    dir=$RUNS/fashion_mnist_${split}_cnn/seed_$seed
    finished "$dir" || { mkdir -p "$(dirname "$dir")" && "$PY" -m cil_jax.main \
        --config configs/data_free.py --config.seed=$seed \
        --config.classes.groups="$(groups_of $split)" "${CNN_FLAGS[@]}" \
        --config.methods=df_replay,eps_kd,joint --workdir "$dir" \
        > "$dir.log" 2>&1; }
  done
  "$PY" docs/data_free/report.py "$RUNS"
done

# Round 4 (issue 12, item 3): the generator synthesiser against inversion,
# both with configs/data_free.py's defaults (batch_stats=auto, eps=auto).
members_round4() {
  local dir=$1
  members_file "$dir" members_round4.json <<JSON
{"$dir/generator": {"methods": "df_replay", "df_replay.batch_stats": "auto",
                    "df_replay.eps": "auto",
                    "df_replay.synthesiser": "generator"}}
JSON
}

if wants 4; then round_of_members 4; fi
