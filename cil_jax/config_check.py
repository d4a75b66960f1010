"""Validation before anything is written: ``validate`` checks the config's
values before any data or model is built; ``validate_steps`` checks the
class steps against the data (batch sizes against split sizes) and the
models (layer presets, the compute dtype). Every message names the
offending key and how to fix it.
"""

import jax

from cil_jax import methods
from cil_jax import optim
from cil_jax.step import build as step_build
from cil_jax.data import train_data
from cil_jax.models import COMPUTE_DTYPES
from cil_jax.models import MODEL_NAMES


# Keys describing a given teacher; meaningless without its checkpoint.
_TEACHER_KEYS = ("module", "module_kwargs", "head_path", "classes",
                 "class_names", "input_pixels", "input_normalization",
                 "input_mean", "input_std")


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
  methods.check(config, need, num_devices)
  need(not config.model.get("cosine_head", False)
       or config.model.cosine_scale_init > 0,
       f"config.model.cosine_scale_init={config.model.cosine_scale_init} "
       f"must be > 0: the cosine head's logits are sigma * cos; use e.g. "
       f"10.")
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
  checks = {m.spec.check_steps for m in all_methods if m.spec.check_steps}
  for check_steps in sorted(checks, key=lambda f: f.__module__):
    check_steps(ctx, all_methods)
  for method in all_methods:
    dim = method.adapter_dim or given_adapter_dim or 0
    step_build.preset_labels(
        method, ctx.abstract(ctx.num_outputs, dim)["params"], ctx.layout)
