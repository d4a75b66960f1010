"""Fashion-MNIST (offline from Debian's dataset-fashion-mnist, else TFDS
download): classes 0-4, then 5-9, with an MLP 784-400-400.

  python -m cil_jax.main --config configs/fashion_mnist.py --workdir DIR
Other splits: --config.classes.groups="((0,1,2,3,4,5,6,7,8),(9,))"
"""

from cil_jax import config_files

default = config_files.sibling(__file__, "default")


def get_config():
  config = default.get_config()
  config.dataset.name = "fashion_mnist"
  config.model.name = "mlp"
  config.model.hidden_sizes = (400, 400)
  config.optim.name = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "cosine"
  config.train.batch_size = 128
  config.train.eval_batch_size = 1024
  config.train.epochs = 5
  config.train.checkpoint_every_epochs = 1
  return config
