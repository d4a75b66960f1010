"""CIFAR-10 through TFDS (needs the network, or a prepared data_dir):
ResNet-20, classes 0-4 then 5-9, SGD with momentum, cosine decay,
random crop + flip.

  python -m cil_jax.main --config configs/cifar10.py --workdir DIR
"""

from cil_jax import config_files

default = config_files.sibling(__file__, "default")


def get_config():
  config = default.get_config()
  config.dataset.name = "cifar10"
  config.model.name = "resnet"
  config.model.resnet_depth = 20
  config.model.resnet_width = 16
  config.optim.name = "sgd"
  config.optim.learning_rate = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.weight_decay = 5e-4
  config.optim.schedule = "cosine"
  config.optim.warmup_steps = 200
  config.train.batch_size = 128
  config.train.eval_batch_size = 1000
  config.train.epochs = 30
  config.train.checkpoint_every_epochs = 5
  return config
