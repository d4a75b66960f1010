"""Validation before anything is written: ``validate`` checks the config's
values before any data or model is built; ``validate_steps`` checks the
class steps against the data (batch sizes against split sizes) and the
models (layer presets, the compute dtype). Every message names the
offending key and how to fix it.
"""

import jax

from cil_jax import losses
from cil_jax import methods
from cil_jax import optim
from cil_jax import partition
from cil_jax import memory
from cil_jax import regularizers
from cil_jax import rehearsal
from cil_jax import step_build
from cil_jax.data import train_data
from cil_jax.models import COMPUTE_DTYPES
from cil_jax.models import MODEL_NAMES


# Keys describing a given teacher; meaningless without its checkpoint.
_TEACHER_KEYS = ("module", "module_kwargs", "head_path", "classes",
                 "class_names", "input_pixels", "input_normalization",
                 "input_mean", "input_std")
SYNTHESISERS = ("inversion", "generator")  # config.df_replay.synthesiser


def validate(config, num_devices):
  """Raises ``ValueError`` on the first bad value."""
  def need(ok, message):
    if not ok:
      raise ValueError(f"Invalid config: {message}")

  need(config.dataset.placement in train_data.PLACEMENTS,
       f"config.dataset.placement={config.dataset.placement!r}; use one of "
       f"{train_data.PLACEMENTS}.")
  need(config.dataset.shuffle_buffer >= 1,
       f"config.dataset.shuffle_buffer={config.dataset.shuffle_buffer} must "
       f"be >= 1.")
  set_without = [k for k in _TEACHER_KEYS if config.teacher[k]]
  need(config.teacher.checkpoint or not set_without,
       f"config.teacher.{set_without[0] if set_without else ''} is set but "
       f"config.teacher.checkpoint is not; give the teacher's checkpoint or "
       f"unset it.")
  need(config.model.name in MODEL_NAMES,
       f"config.model.name={config.model.name!r}; use one of {MODEL_NAMES}.")
  need(0.0 <= config.model.dropout < 1.0,
       f"config.model.dropout={config.model.dropout} must be in [0, 1).")
  for name in methods.method_names(config.methods):
    methods.get_method(name, config)  # parses eps
  kd = config.eps_kd
  need(kd.kd_temperature > 0,
       f"config.eps_kd.kd_temperature={kd.kd_temperature} must be > 0.")
  need(kd.kd_form in losses.KD_FORMS,
       f"config.eps_kd.kd_form={kd.kd_form!r}; use one of {losses.KD_FORMS}.")
  need(kd.ce_form in losses.CE_FORMS,
       f"config.eps_kd.ce_form={kd.ce_form!r}; use one of {losses.CE_FORMS}.")
  need(kd.layers in partition.PRESETS,
       f"config.eps_kd.layers={kd.layers!r}; use one of {partition.PRESETS}.")
  need(kd.last_k >= 1, f"config.eps_kd.last_k={kd.last_k} must be >= 1.")
  need(kd.layers != "adapter" or kd.adapter_dim > 0,
       "config.eps_kd.layers='adapter' needs config.eps_kd.adapter_dim > 0.")
  need(kd.layers != "regex" or kd.trainable_regex,
       "config.eps_kd.layers='regex' needs config.eps_kd.trainable_regex.")
  _check_replay(config, need)
  need(config.df_replay.generator.batch_size % num_devices == 0,
       f"config.df_replay.generator.batch_size="
       f"{config.df_replay.generator.batch_size} must be a multiple of the "
       f"{num_devices} devices in use (each trains the generator on its "
       f"share of the batch).")
  _check_regularizers(config, need)
  _check_memory(config, need)
  _check_cosine_head(config, need)
  need(config.optim.name in optim.OPTIMIZERS,
       f"config.optim.name={config.optim.name!r}; use one of "
       f"{optim.OPTIMIZERS}.")
  need(config.optim.schedule in optim.SCHEDULES,
       f"config.optim.schedule={config.optim.schedule!r}; use one of "
       f"{optim.SCHEDULES}.")
  need(config.optim.learning_rate > 0,
       f"config.optim.learning_rate={config.optim.learning_rate} must be > 0.")
  need(config.optim.weight_decay >= 0,
       f"config.optim.weight_decay={config.optim.weight_decay} must be >= 0.")
  need(config.train.epochs >= 1,
       f"config.train.epochs={config.train.epochs} must be >= 1.")
  need(config.train.checkpoint_every_epochs >= 1,
       f"config.train.checkpoint_every_epochs="
       f"{config.train.checkpoint_every_epochs} must be >= 1.")
  need(config.runtime.checkpoint_min_seconds >= 0,
       f"config.runtime.checkpoint_min_seconds="
       f"{config.runtime.checkpoint_min_seconds} must be >= 0 (0: a "
       f"checkpoint at every train.checkpoint_every_epochs boundary).")
  need(config.train.dtype in COMPUTE_DTYPES,
       f"config.train.dtype={config.train.dtype!r}; use one of "
       f"{COMPUTE_DTYPES} (bfloat16: compute in bfloat16, parameters and "
       f"losses in float32).")
  for key in ("batch_size", "eval_batch_size"):
    size = config.train[key]
    need(size > 0 and size % num_devices == 0,
         f"config.train.{key}={size} must be a positive multiple of the "
         f"{num_devices} devices in use (set config.train.num_devices or "
         f"change the batch size).")


def devices(requested):
  """The local devices ``config.train.num_devices`` asks for."""
  local = jax.local_devices()
  if requested < 0 or requested > len(local):
    raise ValueError(f"Invalid config: config.train.num_devices={requested} "
                     f"but {len(local)} local devices exist; use 0 for all.")
  return local[:requested] if requested else local


def validate_steps(ctx, all_methods, given_adapter_dim=None):
  """Every step that will train has a full batch, every method's layer
  preset fits the student of step 1, and a foreign model computes in
  float32. ``given_adapter_dim`` is the given teacher's adapter size
  (``None``: C_A is trained here)."""
  teacher_given = given_adapter_dim is not None
  config = ctx.config
  if ctx.foreign is not None and config.train.dtype != "float32":
    raise ValueError(
        f"Invalid config: config.train.dtype={config.train.dtype!r}, but "
        f"the teacher {config.teacher.checkpoint} is a model of your own "
        f"(a Flax module or a Keras model), which cil_jax runs in the dtypes "
        f"it was built with; only cil_jax's own models (config.model) "
        f"compute in bfloat16. Set --config.train.dtype=float32, or build "
        f"your module to compute in bfloat16 itself.")
  if ctx.foreign is not None and config.model.get("cosine_head", False):
    raise ValueError(
        f"Invalid config: config.model.cosine_head=True, but the teacher "
        f"{config.teacher.checkpoint} is a model of your own, whose head "
        f"cil_jax widens as it is; set --config.model.cosine_head=False.")
  per_process = config.train.batch_size // jax.process_count()
  steps = [] if teacher_given else [(0, "base", ctx.groups[0])]
  for t in range(1, len(ctx.groups)):
    for method in all_methods:
      steps.append((t, method.name,
                    ctx.train_classes(t, scratch=method.joint)))
  for t, name, class_ids in steps:
    examples = ctx.train_examples(class_ids)
    if examples < per_process:
      raise ValueError(
          f"Invalid config: config.train.batch_size={config.train.batch_size}"
          f" but step {t} of {name} trains on only {examples} examples "
          f"(classes {class_ids}) per process, not one full batch; lower "
          f"config.train.batch_size to at most {examples}.")
  _check_memory_fits(ctx, all_methods)
  for method in all_methods:
    dim = method.adapter_dim or given_adapter_dim or 0
    step_build.preset_labels(
        method, ctx.abstract(ctx.num_outputs, dim)["params"], ctx.layout)


def _check_regularizers(config, need):
  for name in regularizers.REGULARIZERS:
    weight = config[name].weight
    need(isinstance(weight, (int, float)) and weight >= 0,
         f"config.{name}.weight={weight!r} must be a number >= 0 (it "
         f"multiplies the {name} penalty; 0 is fine-tuning); use e.g. "
         f"--config.{name}.weight=1.0.")
  need(0.0 < config.ewc.decay <= 1.0,
       f"config.ewc.decay={config.ewc.decay} must be in (0, 1]: online EWC "
       f"multiplies the running Fisher by it each step; use e.g. 0.9, or 1 "
       f"to keep it whole.")
  need(config.si.damping > 0,
       f"config.si.damping={config.si.damping} must be > 0: SI divides by "
       f"(parameter change)^2 + damping; use e.g. 0.1.")
  used = [n for n in methods.method_names(config.methods)
          if n in regularizers.REGULARIZERS]
  need(not used or not config.teacher.checkpoint,
       f"config.methods lists {', '.join(used)}, whose importance comes from "
       f"the teacher's own training data, but config.teacher.checkpoint="
       f"{config.teacher.checkpoint!r} is a given classifier without it; "
       f"remove {', '.join(used)} from config.methods, or train C_A here "
       f"(config.teacher.checkpoint='').")


def _check_memory(config, need):
  used = [n for n in methods.method_names(config.methods)
          if n in rehearsal.REHEARSALS]
  if not used:
    return
  m = config.memory
  need(m.selection in memory.SELECTIONS,
       f"config.memory.selection={m.selection!r} is not a selection rule; "
       f"use one of {memory.SELECTIONS}.")
  need(isinstance(m.per_class, int) and m.per_class >= 0,
       f"config.memory.per_class={m.per_class!r} must be an int >= 0 (0: "
       f"share config.memory.size among the seen classes).")
  need(m.per_class or (isinstance(m.size, int) and m.size > 0),
       f"config.memory.size={m.size!r}, but config.methods lists "
       f"{', '.join(used)}, which rehearse from an exemplar memory of that "
       f"many rows; set it > 0 (e.g. "
       f"--config.memory.size=2000) or give config.memory.per_class.")
  need(m.batch_size >= 0,
       f"config.memory.batch_size={m.batch_size} must be >= 0 (0: "
       f"config.train.batch_size).")
  need(0 < config.bic.val_fraction < 1,
       f"config.bic.val_fraction={config.bic.val_fraction} must be in (0, 1):"
       f" the share of each class's exemplars held out to fit the bias "
       f"correction; use e.g. 0.1.")
  need(config.bic.kd_temperature > 0,
       f"config.bic.kd_temperature={config.bic.kd_temperature} must be > 0.")
  need(not config.teacher.checkpoint,
       f"config.methods lists {', '.join(used)}, whose exemplar memory "
       f"holds the teacher's training data, but config.teacher.checkpoint="
       f"{config.teacher.checkpoint!r} is a given classifier without it; "
       f"remove {', '.join(used)} from config.methods, or train C_A here "
       f"(config.teacher.checkpoint='').")


def _check_cosine_head(config, need):
  """lucir needs the cosine head; the methods that rescale a linear head's
  columns and bias cannot use it."""
  names = methods.method_names(config.methods)
  cosine = config.model.get("cosine_head", False)
  need(cosine or "lucir" not in names,
       "config.methods lists lucir, whose classifier is a cosine-normalised "
       "head, but config.model.cosine_head=False; set "
       "--config.model.cosine_head=True (every method of the run, C_A "
       "included, then uses that head; run lucir apart to compare with "
       "linear-head methods).")
  c = config.lucir
  need(isinstance(c.top_k, int) and c.top_k >= 1,
       f"config.lucir.top_k={c.top_k!r} must be an int >= 1: the hard "
       f"new-class negatives per memory row; use e.g. 2.")
  for key in ("lambda_base", "margin", "mr_weight"):
    need(c[key] >= 0, f"config.lucir.{key}={c[key]} must be >= 0.")
  if not cosine:
    return
  need(config.model.cosine_scale_init > 0,
       f"config.model.cosine_scale_init={config.model.cosine_scale_init} "
       f"must be > 0: the cosine head's logits are sigma * cos; use e.g. "
       f"10.")
  linear = [n for n in names if n == "bic"
            or (n in ("eps_kd", "df_replay") and config[n].weight_aligning)]
  need(not linear,
       f"config.model.cosine_head=True, but config.methods lists "
       f"{', '.join(linear)}, which rescales a linear head's columns and "
       f"bias (bic's correction, weight aligning); set "
       f"--config.model.cosine_head=False for them (run lucir apart), or "
       f"turn off config.<method>.weight_aligning.")


def _check_memory_fits(ctx, all_methods):
  """A shared budget holds at least one exemplar of every class (bic: two,
  one to hold out); the memory indexes a training split held in memory
  (bic: on the devices)."""
  used = [m.name for m in all_methods if m.rehearsal]
  if not used:
    return
  m = ctx.config.memory
  if not m.per_class and m.size < ctx.num_outputs:
    raise ValueError(
        f"Invalid config: config.memory.size={m.size} is smaller than the "
        f"{ctx.num_outputs} classes of the sequence, so the last step "
        f"could keep no exemplar of some classes; raise config.memory.size "
        f"to at least {ctx.num_outputs} (e.g. "
        f"{20 * ctx.num_outputs} for 20 per class) or set "
        f"config.memory.per_class.")
  if ctx.source.arrays("train") is None:
    raise ValueError(
        f"Invalid config: config.methods lists {', '.join(used)}, whose "
        f"exemplar memory indexes the training split in memory, but this "
        f"split is streamed (too large to hold); use a smaller dataset or "
        f"drop {', '.join(used)}.")
  if "bic" not in used:
    return
  if (m.per_class or m.size // ctx.num_outputs) < 2:
    raise ValueError(
        f"Invalid config: bic holds out part of each class's exemplars and "
        f"trains on the rest, but config.memory.size={m.size} leaves fewer "
        f"than 2 per class at the last step; raise config.memory.size to "
        f"at least {2 * ctx.num_outputs}.")
  if train_data.placement_of(ctx.source, ctx.config.dataset) != "device":
    raise ValueError(
        "Invalid config: bic holds rows of the training split out of the "
        "step, which needs the split on the devices; set "
        "config.dataset.placement='device' or drop bic from config.methods.")


def _check_replay(config, need):
  c, inv = config.df_replay, config.df_replay.inversion
  need(c.kd_temperature > 0,
       f"config.df_replay.kd_temperature={c.kd_temperature} must be > 0.")
  need(c.ce_form in losses.CE_FORMS,
       f"config.df_replay.ce_form={c.ce_form!r}; use one of "
       f"{losses.CE_FORMS}.")
  need(c.batch_stats in methods.BATCH_STATS,
       f"config.df_replay.batch_stats={c.batch_stats!r}; use one of "
       f"{methods.BATCH_STATS}.")
  need(c.samples >= 0,
       f"config.df_replay.samples={c.samples} must be >= 0 (0 turns replay "
       f"off).")
  need(c.weight >= 0, f"config.df_replay.weight={c.weight} must be >= 0.")
  need(c.batch_size >= 0,
       f"config.df_replay.batch_size={c.batch_size} must be >= 0 (0: "
       f"config.train.batch_size).")
  need(c.head_finetune_steps >= 0,
       f"config.df_replay.head_finetune_steps={c.head_finetune_steps} "
       f"must be >= 0.")
  need(c.head_finetune_targets in ("soft", "hard"),
       f"config.df_replay.head_finetune_targets={c.head_finetune_targets!r}; "
       f"use 'soft' or 'hard'.")
  need(not c.head_finetune_steps or c.samples,
       f"config.df_replay.head_finetune_steps={c.head_finetune_steps} "
       f"balances the head on synthetic old-class rows, but "
       f"config.df_replay.samples=0 makes none; set samples (e.g. 4096) or "
       f"head_finetune_steps=0.")
  need(inv.steps >= 1 and inv.batch_size >= 2,
       f"config.df_replay.inversion.steps={inv.steps} must be >= 1 and "
       f"inversion.batch_size={inv.batch_size} >= 2 (BatchNorm statistics "
       f"are matched over a batch).")
  need(c.synthesiser in SYNTHESISERS,
       f"config.df_replay.synthesiser={c.synthesiser!r}; use one of "
       f"{SYNTHESISERS}.")
  gen = c.generator
  need(min(gen.steps, gen.batch_size - 1, gen.z_dim, gen.hidden) >= 1,
       f"config.df_replay.generator.steps={gen.steps}, batch_size="
       f"{gen.batch_size}, z_dim={gen.z_dim} and hidden={gen.hidden} must "
       f"be >= 1 (batch_size >= 2: BatchNorm statistics are matched over "
       f"a batch).")
  need(gen.learning_rate > 0 and min(gen.bn_weight,
                                     gen.diversity_weight) >= 0,
       f"config.df_replay.generator.learning_rate={gen.learning_rate} must "
       f"be > 0, and bn_weight={gen.bn_weight} and diversity_weight="
       f"{gen.diversity_weight} >= 0.")
  need(inv.learning_rate > 0,
       f"config.df_replay.inversion.learning_rate={inv.learning_rate} must "
       f"be > 0.")
  need(min(inv.bn_weight, inv.tv_weight, inv.l2_weight) >= 0,
       "config.df_replay.inversion.bn_weight, tv_weight and l2_weight must "
       "be >= 0.")
