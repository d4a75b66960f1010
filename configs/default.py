"""Default experiment: digits 0-4, then 5-9 added without the old data.

Runs offline on scikit-learn's embedded digits (1,797 real 8x8 images).
  python -m cil_jax.main --config configs/default.py --workdir /tmp/cil
"""

from ml_collections import config_dict


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

  # A given classifier to start from (configs/add_classes.py sets it).
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

  config.eps_kd = config_dict.ConfigDict()
  config.eps_kd.eps = "auto"  # a number in [0, 1], or auto = k / (k + m)
  config.eps_kd.kd_form = "full"  # full (Taitelbaum et al.) | renormalized (LwF)
  config.eps_kd.kd_temperature = 2.0
  config.eps_kd.kd_t2_scaling = False
  # all | head | new_rows | last_k | adapter | regex
  config.eps_kd.layers = "all"
  config.eps_kd.last_k = 2  # layers=last_k
  config.eps_kd.adapter_dim = 64  # layers=adapter
  config.eps_kd.trainable_regex = ""  # layers=regex, e.g. "(backbone/layer_01|head)/.*"
  # all: CE over every seen class (the paper's). local: CE over the new
  # classes only (R-DFCIL), so new data does not push old logits down; only
  # KD then ranks new against old logits (kd_form=full pushes new ones
  # down: new classes unlearnt on Fashion-MNIST); one new class: CE is 0.
  config.eps_kd.ce_form = "all"
  # After each step, scale the new head columns (and biases) to the old
  # columns' mean norm (weight aligning, Zhao et al. CVPR 2020).
  config.eps_kd.weight_aligning = False

  # df_replay (docs/data_free.md): data-free class addition with replay of
  # old-class inputs synthesised from the teacher. eps_kd's loss (KD form
  # full, T) with its own knobs below: local CE, and each step
  # synthesises `samples` inputs of the old classes by inverting the
  # teacher (DeepInversion: target classes + matching its BatchNorm
  # statistics, so use a model with BatchNorm: model.batch_norm=True),
  # distils on batch_size (0: train.batch_size) of them beside each batch
  # with weight `weight`, then trains the head alone for
  # head_finetune_steps on a class-balanced CE over new and synthetic rows.
  config.df_replay = config_dict.ConfigDict()
  config.df_replay.eps = "0.5"  # a number in [0, 1], or auto
  config.df_replay.kd_temperature = 2.0
  config.df_replay.ce_form = "local"  # local | all
  # frozen: every BatchNorm keeps the teacher's running statistics
  # (new-class-only batches would shift them) | train (on the new-class
  # batches) | mixed (on each batch's real new and synthetic old rows
  # together, in one BatchNorm batch) | auto (per step: frozen when the new
  # classes are at most a fifth of the seen ones, else train).
  config.df_replay.batch_stats = "frozen"
  config.df_replay.samples = 2048
  config.df_replay.weight = 1.0
  config.df_replay.batch_size = 0
  config.df_replay.head_finetune_steps = 100  # whole epochs, at least this
  # On synthetic rows: soft (the teacher's full KD at kd_temperature) or
  # hard (CE to its prediction).
  config.df_replay.head_finetune_targets = "soft"
  # After each step, scale the new head columns to the old ones' mean norm.
  config.df_replay.weight_aligning = True
  # inversion: optimise the inputs themselves (DeepInversion); generator:
  # train a small generator against the teacher (ABD, R-DFCIL), then draw.
  config.df_replay.synthesiser = "inversion"
  config.df_replay.inversion = config_dict.ConfigDict()
  config.df_replay.inversion.steps = 250  # Adam steps per synthesis batch
  config.df_replay.inversion.learning_rate = 0.05
  config.df_replay.inversion.batch_size = 256  # BN statistics over a batch
  config.df_replay.inversion.bn_weight = 1.0
  config.df_replay.inversion.tv_weight = 0.0  # total variation (images)
  config.df_replay.inversion.l2_weight = 0.0
  config.df_replay.generator = config_dict.ConfigDict()
  config.df_replay.generator.steps = 500  # Adam steps of the generator
  config.df_replay.generator.learning_rate = 1e-3
  config.df_replay.generator.batch_size = 256  # split over the devices
  config.df_replay.generator.z_dim = 64  # noise, beside the one-hot class
  config.df_replay.generator.hidden = 256  # two hidden Dense layers
  config.df_replay.generator.bn_weight = 1.0
  config.df_replay.generator.diversity_weight = 1.0

  # Regularisation methods (docs/methods.md): fine-tuning of all layers plus
  # weight * sum(importance * (theta - theta_previous)^2); the importance
  # of each model is computed at the end of its step from that step's data.
  # ewc: diagonal Fisher. Our weight is the paper's lambda / 2. online:
  # one running Fisher, decayed by `decay` (gamma) each step, anchored at
  # the latest model; else a penalty per earlier model (summed exactly).
  config.ewc = config_dict.ConfigDict()
  config.ewc.weight = 5000.0
  config.ewc.online = False
  config.ewc.decay = 1.0  # online only, in (0, 1]
  # si: path integral of each step's training (Zenke et al. 2017), c and xi.
  config.si = config_dict.ConfigDict()
  config.si.weight = 1.0
  config.si.damping = 0.1
  # mas: gradient of the squared L2 norm of the logits (Aljundi et al. 2018).
  config.mas = config_dict.ConfigDict()
  config.mas.weight = 1.0

  # Rehearsal methods (docs/methods.md), which STORE OLD DATA: an exemplar
  # memory of training rows of the seen classes, selected after each step
  # and drawn batch_size (0: train.batch_size) rows at a time beside every
  # batch. er: cross-entropy on batch + memory rows; icarl (Rebuffi et al.
  # 2017): sigmoid distillation on both, nearest-mean-of-exemplars
  # classifier; agem (Chaudhry et al. 2019): the batch's gradient projected
  # against the memory rows'. size: exemplars in all, shared equally by
  # the seen classes; or per_class > 0 exemplars per class (size then
  # ignored). selection: herding (iCaRL) | random.
  config.memory = config_dict.ConfigDict()
  config.memory.size = 2000
  config.memory.per_class = 0
  config.memory.selection = "herding"
  config.memory.batch_size = 0
  # bic (Wu et al. 2019; stores old data): (1 - lambda) CE + lambda LwF
  # distillation at kd_temperature (lambda = old / seen classes) on new data
  # and memory rows, then alpha * z + beta on the new classes' logits,
  # fitted on val_fraction of each class's exemplars and as many new rows
  # per new class, held out of the step's training.
  config.bic = config_dict.ConfigDict()
  config.bic.val_fraction = 0.1
  config.bic.kd_temperature = 2.0
  # lucir (Hou et al. 2019; stores old data; needs model.cosine_head=True):
  # CE on new data and memory rows + lambda_base * sqrt(old / new classes)
  # * (1 - cos(new, old features)) + mr_weight * the margin ranking loss
  # (each memory row's true-class cosine above its top_k new-class ones by
  # margin).
  config.lucir = config_dict.ConfigDict()
  config.lucir.lambda_base = 5.0
  config.lucir.margin = 0.5
  config.lucir.top_k = 2
  config.lucir.mr_weight = 1.0

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
