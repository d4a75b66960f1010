"""The study of Taitelbaum et al. (ICASSP 2019) on Fashion-MNIST: accuracy
after adding 10-k classes to a k-class classifier, over layer presets and
eps, with finetune and joint as references.

  python -m cil_jax.sweep --config configs/taitelbaum_sweep.py --workdir DIR
  python -m cil_jax.sweep.aggregate --workdir DIR
  python docs/taitelbaum/figure.py --workdir DIR --out docs/taitelbaum

(``bash launch/taitelbaum_sweep.sh`` runs them and updates docs/taitelbaum.)

The full grid of the issue: k = 2..9 original classes, five layer presets,
six eps values, three seeds (720 eps-KD runs and 48 reference runs). The
launcher runs each (k, seed) as one group: C_A is trained once and the 30
eps-KD members and the references share its process (vmapped per preset on
accelerators, in turn on CPU).
"""

from cil_jax import config_files
from cil_jax.sweep import grid

fashion_mnist = config_files.sibling(__file__, "fashion_mnist")

PRESETS = ("all", "last_k", "head", "new_rows", "adapter")
ORIGINAL = (2, 3, 4, 5, 6, 7, 8, 9)  # k original classes; m = 10 - k new ones
EPS = ("0.1", "0.3", "0.5", "0.7", "0.8", "0.9")
SEEDS = (0, 1, 2)


def get_config():
  config = fashion_mnist.get_config()
  config.methods = "eps_kd"
  config.train.epochs = 3
  config.train.checkpoint_every_epochs = 3
  config.eps_kd.last_k = 2  # the last hidden layer and the head
  return config


def _split(k):
  return {"classes.groups": (tuple(range(k)), tuple(range(k, 10)))}


def get_sweep():
  splits = [_split(k) for k in ORIGINAL]
  return grid.product(grid.axis("seed", SEEDS), grid.concat(
      grid.product(splits, grid.axis("eps_kd.layers", PRESETS),
                   grid.axis("eps_kd.eps", EPS)),
      grid.product(splits, grid.axis("methods", ["finetune,joint"]))))
