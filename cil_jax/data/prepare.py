"""Builds a config's dataset and its cil_jax cache (``cache.py``: the
statistics, class counts and, for splits that fit in memory, the decoded
arrays), nothing else; with the cache in place it checks the cache.

  python -m cil_jax.data.prepare --config configs/x.py [--config.key=value]

``python -m cil_jax.sweep`` runs it once before starting parallel workers.
"""

from absl import app
from ml_collections import config_flags

from cil_jax.data import source

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)


def main(argv):
  del argv
  data = source.Source(_CONFIG.value.dataset)
  info = data.info
  for which in ("train", "test"):
    data.arrays(which)  # reads (so checks) a cache built earlier
  print(f"{info.name}: {info.num_classes} classes, input {info.input_shape}, "
        f"{int(info.class_counts['train'].sum())} train and "
        f"{int(info.class_counts['test'].sum())} test examples", flush=True)


if __name__ == "__main__":
  app.run(main)
