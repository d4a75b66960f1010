"""bic: Large Scale Incremental Learning (Wu et al. CVPR 2019; STORES OLD
DATA). (1 - lambda) CE + lambda LwF distillation at ``kd_temperature``
(lambda = old / seen classes) on new data and memory rows, on all but a
held-out part of the memory and of the new data; then the bias
correction: after a step trained on new data and a small memory the head
favours the new classes, so two scalars are fitted on the held-out split,
balanced over the classes, the model frozen: the new classes' logits
become ``alpha * z + beta`` (minimising the cross-entropy over the seen
classes). The head being linear, the correction folds into it: the new
columns of the kernel times alpha, their bias ``alpha * b + beta``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_dict

from cil_jax.memory import exemplars
from cil_jax import losses
from cil_jax.memory import selection as memory_lib
from cil_jax import rebalance
from cil_jax.data import train_data
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import rows

_HELD_OUT_SALT = 0xB1C


def defaults():
  # val_fraction of each class's exemplars, and as many new rows per new
  # class, are held out of the step's training to fit the correction.
  c = config_dict.ConfigDict()
  c.val_fraction = 0.1
  c.kd_temperature = 2.0
  return c


def check(config, need, names, num_devices):
  rows.check(config, need, names, num_devices)
  if not rows.users(names):
    return
  need(0 < config.bic.val_fraction < 1,
       f"config.bic.val_fraction={config.bic.val_fraction} must be in (0, 1):"
       f" the share of each class's exemplars held out to fit the bias "
       f"correction; use e.g. 0.1.")
  need(config.bic.kd_temperature > 0,
       f"config.bic.kd_temperature={config.bic.kd_temperature} must be > 0.")
  need(not ("bic" in names and config.model.get("cosine_head", False)),
       "config.model.cosine_head=True, but config.methods lists bic, which "
       "rescales a linear head's columns and bias (bic's correction); set "
       "--config.model.cosine_head=False for it (run lucir apart).")


def check_steps(ctx, all_methods):
  """Two exemplars per class at the last step (one to hold out), and the
  training split on the devices (rows are held out of it)."""
  rows.check_steps(ctx, all_methods)
  if "bic" not in [m.name for m in all_methods]:
    return
  m = ctx.config.memory
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


def from_config(spec, config):
  # eps None: lambda = old / seen classes, the auto rule.
  return rows.from_config(spec, config, eps=None, kd_form="renormalized",
                          kd_temperature=float(config.bic.kd_temperature))


def held_out(ctx, t, memory):
  """The split at step ``t``: ``(memory rows that train, held-out rows
  {"index", "label"})``. Each old class holds out its last
  ``round(bic.val_fraction * its exemplars)`` (at least 1, and at least
  1 left to train on), each new class as many of its training rows,
  drawn at random (seeded by run, step and class); the step never trains
  on them."""
  counts = np.bincount(memory["label"])
  count = int(counts[counts > 0].min())
  per_class = min(max(1, round(ctx.config.bic.val_fraction * count)),
                  count - 1)
  kept, held = memory_lib.hold_out(memory, per_class)
  _, labels = ctx.source.arrays("train")
  for class_id in ctx.groups[t]:
    class_rows = np.flatnonzero(labels == class_id)
    order = memory_lib.random_order(
        len(class_rows), per_class,
        (ctx.config.seed, t, int(class_id), _HELD_OUT_SALT))
    held = memory_lib.add(held, int(ctx.mapping[class_id]),
                          class_rows[order])
  return kept, held


def train_rows(ctx, t, previous):
  """The new classes' held-out rows, kept out of the step's training."""
  return held_out(ctx, t, previous.memory)[1]["index"]


def corrected(logits, alpha, beta, num_old, num_seen):
  """``logits`` with columns ``num_old`` to ``num_seen`` mapped to
  ``alpha * z + beta``."""
  position = jnp.arange(logits.shape[-1])
  new = (position >= num_old) & (position < num_seen)
  return jnp.where(new, alpha * logits + beta, logits)


def fit_correction(logits, labels, num_old, num_seen, steps=500,
                   learning_rate=0.05):
  """``(alpha, beta)`` minimising the cross-entropy over the first
  ``num_seen`` classes of the corrected ``logits`` (Adam from (1, 0))."""
  def loss(ab):
    return losses.cross_entropy(losses.mask_logits(
        corrected(logits, ab[0], ab[1], num_old, num_seen), num_seen),
                                labels)
  tx = optax.adam(learning_rate)

  def step(carry, _):
    ab, state = carry
    updates, state = tx.update(jax.grad(loss)(ab), state)
    return (optax.apply_updates(ab, updates), state), None
  ab = jnp.array([1.0, 0.0])
  (ab, _), _ = jax.lax.scan(step, (ab, tx.init(ab)), None, length=steps)
  return float(ab[0]), float(ab[1])


def correct_bias(ctx, t, job, member, variables, models, training):
  """``Spec.finish``: (alpha, beta) of the new classes' logits fitted on
  the step's held-out rows, folded into the head; the accuracy before it
  is recorded beside."""
  del member
  if job.previous is None:
    return variables, training
  num_old, num_seen = ctx.num_old(t), ctx.num_seen(t)
  _, held = held_out(ctx, t, job.previous.memory)
  images, _ = ctx.source.arrays("train")
  logits = np.asarray(ctx.logits_fn(models.adapter_dim)(
      variables, exemplars.normalised(ctx, images, held["index"])))
  alpha, beta = fit_correction(logits, held["label"], num_old, num_seen)
  before = ctx.evaluate(variables, t, models.adapter_dim)
  variables = rebalance.map_head(
      variables, ctx.head_path,
      lambda head: rebalance.correct_bias(head, alpha, beta, num_old,
                                          num_seen),
      "a model whose head has a bias, or drop bic from config.methods")
  print(f"{job.method.name} step {t}: bias correction alpha {alpha:.4f} "
        f"beta {beta:.4f} on {len(held['label'])} held-out rows", flush=True)
  return variables, dict(
      training, bic_alpha=round(alpha, 6), bic_beta=round(beta, 6),
      bic_held_out=len(held["label"]),
      uncorrected_acc_all=before["acc_all"],
      uncorrected_acc_old=before["acc_old"],
      uncorrected_acc_new=before["acc_new"])


METHOD = spec_lib.Spec(
    name="bic", index=12, family="stores examples",
    summary="CE + LwF KD on batch and memory rows, then bias correction",
    from_config=from_config, objective=rows.ce_kd_objective,
    sections={**rows.SECTIONS, "bic": defaults}, check=check,
    check_steps=check_steps, train_rows=train_rows,
    rows=rows.make_rows(lambda ctx, t, memory: held_out(ctx, t, memory)[0]),
    finish=correct_bias)
