"""What the methods that store old examples share (er, icarl, agem, bic,
lucir): the ``config.memory`` section, its checks, the exemplar memory's
rows beside every batch, and one forward pass over the batch and those
rows together.

The memory (``cil_jax.memory.exemplars``) is selected after each step and fed
beside every batch of the next one, ``config.memory.batch_size`` rows at a
time (0: ``train.batch_size``). These methods STORE OLD DATA, unlike the
data-free ones.
"""

import jax.numpy as jnp
from ml_collections import config_dict

from cil_jax.memory import exemplars
from cil_jax import losses
from cil_jax.memory import selection as memory_lib
from cil_jax import timer
from cil_jax.methods import spec as spec_lib


def memory_defaults():
  # size: exemplars in all, shared equally by the seen classes; or
  # per_class > 0 exemplars per class (size then ignored). selection:
  # herding (iCaRL) | random.
  c = config_dict.ConfigDict()
  c.size = 2000
  c.per_class = 0
  c.selection = "herding"
  c.batch_size = 0
  return c


SECTIONS = {"memory": memory_defaults}


def from_config(spec, config, eps=0.0, **knobs):
  """A method that keeps an exemplar memory and trains beside its rows."""
  return spec_lib.Method(
      spec, eps, memory=True,
      replay_batch=int(config.memory.batch_size or config.train.batch_size),
      **knobs)


def users(names):
  """The methods of ``names`` that keep an exemplar memory."""
  from cil_jax import methods  # pylint: disable=g-import-not-at-top
  return [n for n in names if "memory" in methods.get(n).sections]


def check(config, need, names, num_devices):
  """``config.memory`` when the run uses a memory, and no given teacher
  (the memory holds the teacher's own training data)."""
  del num_devices
  used = users(names)
  if not used:
    return
  m = config.memory
  need(m.selection in memory_lib.SELECTIONS,
       f"config.memory.selection={m.selection!r} is not a selection rule; "
       f"use one of {memory_lib.SELECTIONS}.")
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
  need(not config.teacher.checkpoint,
       f"config.methods lists {', '.join(used)}, whose exemplar memory "
       f"holds the teacher's training data, but config.teacher.checkpoint="
       f"{config.teacher.checkpoint!r} is a given classifier without it; "
       f"remove {', '.join(used)} from config.methods, or train C_A here "
       f"(config.teacher.checkpoint='').")


def check_steps(ctx, all_methods):
  """A shared budget holds at least one exemplar of every class; the
  memory indexes a training split held in memory."""
  used = users([m.name for m in all_methods])
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


def make_rows(training_memory=None):
  """``Spec.rows`` of a memory method: per job, the exemplar memory rows
  of its previous model (``exemplars.replay_set``, with the teacher's
  logits when the method distils). ``training_memory(ctx, t, memory)``:
  the part of the memory the step trains on (default: all of it)."""
  def rows(ctx, t, jobs, models, key):
    del key
    method = jobs[0].method
    with timer.section("exemplars"):
      return [exemplars.replay_set(
          ctx, training_memory(ctx, t, job.previous.memory)
          if training_memory else job.previous.memory, ctx.num_old(t),
          models.teacher_logits_fn if method.distills else None,
          job.previous.variables) for job in jobs]
  return rows


def ce_kd_objective(method, build):
  """CE over the seen classes plus ``eps`` times the teacher's KD, on the
  batch and the memory rows in one pass (BiC's and WA's loss; the
  teacher's logits of the memory rows come with them)."""
  del method

  def loss(inputs, params):
    count, _, seen_logits, labels, updates = joint_forward(inputs, params)
    hparams = inputs.hparams
    ce = losses.cross_entropy(seen_logits, labels)
    kd = losses.distillation(
        build.kd_form, losses.mask_logits(
            jnp.concatenate([inputs.teacher_logits,
                             inputs.batch["replay_logits"]]),
            hparams["num_old"]),
        seen_logits, hparams["kd_temperature"], build.kd_t2_scaling,
        num_old=hparams["num_old"])
    total = losses.eps_mix(ce, kd, hparams["eps"])
    return total, (seen_logits[:count], updates.get("batch_stats", {}),
                   total, kd)
  return spec_lib.Objective(loss)


def joint_forward(inputs, params):
  """One train-mode pass over the batch and the memory rows together:
  ``(rows, logits, seen_logits, labels, updates)``, ``rows`` the batch's
  count (the memory rows follow), ``seen_logits`` masked to the seen
  classes."""
  batch = inputs.batch
  all_logits, updates = inputs.student(
      params, jnp.concatenate([batch["image"], batch["replay_image"]]))
  labels = jnp.concatenate([batch["label"], batch["replay_label"]])
  seen_logits = losses.mask_logits(all_logits, inputs.hparams["num_seen"])
  return (batch["image"].shape[0], all_logits, seen_logits, labels,
          updates)
