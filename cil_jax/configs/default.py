"""Default experiment: digits 0-4, then 5-9 added without the old data.

Runs offline on scikit-learn's embedded digits (1,797 real 8x8 images).
  python -m cil_jax.main --workdir /tmp/cil

The config ``python -m cil_jax.main`` runs without ``--config``;
``configs/default.py`` of the repository returns it.
"""

from ml_collections import config_dict

from cil_jax import methods


def get_config():
  config = config_dict.ConfigDict()
  config.seed = 0
  # Comma-separated, run side by side: eps_kd (the method), df_replay
  # (eps_kd with data-free replay, below), lwf, finetune (lower reference),
  # joint (oracle trained on all seen classes' data), the
  # regularisation methods ewc, si, mas and the rehearsal methods er,
  # icarl, agem, bic (below; these store old data).
  config.methods = "eps_kd,finetune,joint"

  config.dataset = config_dict.ConfigDict()
  # "digits" (embedded, offline) or any TFDS image classification dataset;
  # fashion_mnist builds offline from Debian's dataset-fashion-mnist.
  config.dataset.name = "digits"
  config.dataset.data_dir = ""  # TFDS data_dir; "" = TFDS default
  config.dataset.manual_dir = ""  # TFDS manual_dir; "" = Debian's, if any
  config.dataset.train_split = "train"
  config.dataset.test_split = "test"
  # auto: keep a step's training data on device when it fits device_max_mb.
  config.dataset.placement = "auto"  # auto | device | host
  config.dataset.device_max_mb = 1024
  config.dataset.shuffle_buffer = 65536  # host placement

  config.classes = config_dict.ConfigDict()
  # One tuple of dataset class ids per step; step 0 trains C_A.
  config.classes.groups = ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
  # Names of the classes of classes.groups, comma-separated in their order
  # ("" for an unnamed one); saved in every classifier's metadata.
  config.classes.names = ""
  # Set to shuffle the class ids over the groups (same group sizes).
  config.classes.order_seed = config_dict.placeholder(int)

  # A given classifier to start from (add_classes.py sets it).
  config.teacher = config_dict.ConfigDict()
  config.teacher.checkpoint = ""
  # A Flax module of your own as teacher (docs/checkpoint.md): its import
  # path "pkg.mod:Net", keyword arguments as JSON, the keyword that tells it
  # training from inference ("" if none), the slash path of its final Dense
  # in params ("" to detect), and, for a checkpoint without cil_jax
  # metadata, the dataset class id (and optionally name) of each output.
  config.teacher.module = ""
  config.teacher.module_kwargs = ""
  config.teacher.train_kwarg = "train"
  config.teacher.head_path = ""
  config.teacher.classes = ()
  config.teacher.class_names = ""  # comma-separated
  # The input the teacher expects, when its metadata does not say
  # (docs/checkpoint.md): pixels unit | byte | stored; normalization
  # none | mean_std (input_mean, input_std per channel) | module.
  config.teacher.input_pixels = ""
  config.teacher.input_normalization = ""
  config.teacher.input_mean = ()
  config.teacher.input_std = ()

  config.model = config_dict.ConfigDict()
  config.model.name = "mlp"  # mlp | cnn | resnet
  config.model.hidden_sizes = (256, 256)  # mlp
  # mlp: Dense, BatchNorm, ReLU per layer; its statistics let df_replay
  # synthesise old-class inputs.
  config.model.batch_norm = False
  config.model.conv_features = (32, 64)  # cnn
  config.model.dense_size = 128  # cnn
  config.model.resnet_depth = 20  # resnet: 20, 32, 44, ...
  config.model.resnet_width = 16  # resnet
  config.model.dropout = 0.0  # mlp, cnn
  # A cosine-normalised head, sigma * cos(features, class weight) with one
  # learnable sigma starting at cosine_scale_init (LUCIR's; the method
  # lucir needs it). A model-level knob: every method of the run, C_A
  # included, uses it. LUCIR's code starts sigma at 1 and trains with SGD
  # at lr 0.1, where it grows fast; with Adam at 1e-3 it moves ~1e-3 a
  # step, and from 1 a digits run learnt no new class.
  config.model.cosine_head = False
  config.model.cosine_scale_init = 10.0

  # Each method owns its section, with its defaults and their comments
  # (cil_jax/methods/<name>.py; docs/config.md lists the keys).
  for key, defaults in methods.sections().items():
    config[key] = defaults()

  config.optim = config_dict.ConfigDict()
  config.optim.name = "adam"  # sgd | adam | adamw
  config.optim.learning_rate = 1e-3
  config.optim.momentum = 0.9  # sgd
  config.optim.nesterov = False  # sgd
  config.optim.weight_decay = 0.0
  config.optim.schedule = "cosine"  # constant | cosine | step
  config.optim.warmup_steps = 0
  config.optim.step_boundaries = (0.5, 0.75)  # schedule=step, fractions
  config.optim.step_factor = 0.1  # schedule=step

  config.train = config_dict.ConfigDict()
  config.train.epochs = 30
  config.train.batch_size = 64
  config.train.eval_batch_size = 256
  config.train.checkpoint_every_epochs = 5
  config.train.num_devices = 0  # 0: all local devices
  # What the models compute in: float32 | bfloat16 (activations, matmuls
  # and convolutions of student and teacher; faster on TPUs and recent
  # GPUs). Parameters, optimizer state, checkpoints and the loss math
  # (softmax, CE, KD, penalties) stay float32. cil_jax's own models only:
  # with a Flax or Keras teacher of your own, bfloat16 is refused.
  config.train.dtype = "float32"

  # What a run writes besides results.json (process 0 only).
  config.outputs = config_dict.ConfigDict()
  config.outputs.plots = True  # PNGs in WORKDIR/plots/ at the end
  # Scalars per epoch and step for `tensorboard --logdir WORKDIR`. Off by
  # default: clu's writer imports TensorFlow (about 5 s and 0.45 GB more
  # per process on a 2-core CPU).
  config.outputs.tensorboard = False

  # How this process runs, not what it computes: changing these never
  # changes results, so a workdir accepts a rerun that changes them.
  config.runtime = config_dict.ConfigDict()
  # JAX's persistent compilation cache (cil_jax.compile_cache): a
  # directory, e.g. ~/.cache/cil_jax/xla, makes reruns and the runs of a
  # sweep load their compiled programs instead of compiling them; "" off.
  config.runtime.compilation_cache_dir = ""
  # An epoch-boundary checkpoint is written only once this many seconds of
  # the step's training have passed since the step began or the last
  # checkpoint: a short step killed mid-way is redone from its start (its
  # end is saved as the step's classifier), so saves never dominate it.
  # 0 writes one at every train.checkpoint_every_epochs
  # boundary.
  config.runtime.checkpoint_min_seconds = 30.0
  return config
