"""CIFAR-100, data-free class-incremental learning in the protocol of
Always-Be-Dreaming (Smith et al., ICCV 2021): ResNet-32, 100 classes in
equal tasks (5, 10 or 20), class order shuffled by the seed, no exemplar.
df_replay (config.df_replay) beside eps_kd and the joint oracle. Published
final accuracy for the same family at 5/10/20 tasks: LwF 17.0/9.2/4.7,
DeepInversion 18.8/10.9/5.7, ABD 43.9/33.7/20.0, joint 69.9.

Needs CIFAR-100 in the TFDS data_dir (nothing is downloaded offline). Not
run on this project's CPU machine: its synthesis and schedule settings
below follow DeepInversion/ABD's published ones, untuned here. The whole
path is tested on tfds.testing.mock_data (tests/test_tfds.py).

  python -m cil_jax.main --config configs/cifar100_data_free.py:10 --workdir DIR
(":5" / ":10" / ":20" picks the number of tasks; default 10.)
"""

from cil_jax import config_files

cifar10 = config_files.sibling(__file__, "cifar10")


def get_config(tasks="10"):
  tasks = int(tasks)
  if tasks < 2 or 100 % tasks:
    raise ValueError(f"configs/cifar100_data_free.py:{tasks}: the number "
                     f"of tasks must divide 100 (5, 10 or 20).")
  config = cifar10.get_config()
  config.dataset.name = "cifar100"
  config.model.resnet_depth = 32
  size = 100 // tasks
  config.classes.groups = tuple(tuple(range(start, start + size))
                                for start in range(0, 100, size))
  config.classes.order_seed = 1993  # iCaRL / PyCIL's order; set any seed
  config.methods = "df_replay,eps_kd,joint"
  config.train.epochs = 100
  config.train.checkpoint_every_epochs = 10
  replay = config.df_replay
  replay.samples = 20000
  replay.head_finetune_steps = 2000
  replay.inversion.steps = 2000
  replay.inversion.batch_size = 256
  replay.inversion.learning_rate = 0.1
  replay.inversion.tv_weight = 1e-3
  replay.inversion.l2_weight = 1e-4
  return config
