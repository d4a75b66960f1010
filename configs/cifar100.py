"""CIFAR-100 through TFDS: ResNet-32, the common B50-Inc10 protocol (50
classes, then 5 steps of 10), class order shuffled with seed 1993 as in
iCaRL/PyCIL.

  python -m cil_jax.main --config configs/cifar100.py --workdir DIR
"""

from cil_jax import config_files

cifar10 = config_files.sibling(__file__, "cifar10")


def get_config():
  config = cifar10.get_config()
  config.dataset.name = "cifar100"
  config.model.resnet_depth = 32
  config.classes.groups = (tuple(range(50)),) + tuple(
      tuple(range(start, start + 10)) for start in range(50, 100, 10))
  config.classes.order_seed = 1993
  return config
