"""What the regularisation methods (ewc, si, mas) share.

Each keeps the previous model's parameters (the *anchor* theta*) and an
*importance* Omega per parameter, and adds to the step's loss the penalty

    sum_i Omega_i * (theta_i - theta*_i)^2

(the method's weight is folded into Omega when the step's input is made, so
the step needs no weight of its own; EWC's paper writes lambda/2, so our
``ewc.weight`` is its lambda/2). The importance of the model after a step:

- ``ewc``: the diagonal Fisher information, the mean over the step's
  training examples of the squared gradient of the log-likelihood of the
  model's own prediction (Kirkpatrick et al. 2017; the predicted label as in
  van de Ven & Tolias 2019);
- ``mas``: the mean over the step's training examples of the absolute
  gradient of the squared L2 norm of the output (the logits of the seen
  classes; Aljundi et al. 2018);
- ``si``: the path integral accumulated during the step's training,
  omega_i = -sum_k g_i(k) * delta theta_i(k) (g the gradient of the task
  loss, without the penalty: the paper's path integral of the task loss),
  divided by (theta_end - theta_start)^2 + damping (Zenke et al. 2017).

Over a sequence the importances add up (``combine``); online EWC decays
the old one by gamma. Parameters of classes not seen yet have zero
gradient and never move, so their importance is zero: new head columns
get no penalty.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from ml_collections import config_dict

from cil_jax import timer
from cil_jax.data import pipeline
from cil_jax.methods import spec as spec_lib


def penalty(params, anchor, importance):
  """sum Omega * (theta - theta*)^2 over every parameter."""
  return sum(jax.tree.leaves(jax.tree.map(
      lambda p, a, w: jnp.sum(w * jnp.square(p - a)),
      params, anchor, importance)))


def importance_sum(example, apply_fn, variables, images, mask, num_seen):
  """Sum over the examples where ``mask`` of the per-example importance:
  ``example = (scalar, transform)``, per-example gradients (``jax.vmap``
  of ``jax.grad``) of ``scalar(logits, num_seen)`` mapped by ``transform``
  (squared: the Fisher; absolute: MAS). ``apply_fn`` runs in inference
  mode; logits past ``num_seen`` are masked and get no gradient."""
  scalar, transform = example
  rest = {k: v for k, v in variables.items() if k != "params"}

  def one(params, image):
    logits = apply_fn({"params": params, **rest}, image[None], train=False)
    return scalar(logits[0], num_seen)

  grads = jax.vmap(jax.grad(one), in_axes=(None, 0))(variables["params"],
                                                     images)
  weights = mask.astype(jnp.float32)
  return jax.tree.map(
      lambda g: jnp.tensordot(weights, transform(g), axes=1), grads)


def mean_importance(example, apply_fn, variables, examples, num_seen,
                    batch_size):
  """The mean over ``examples`` (``pipeline.Examples`` or a tf.data split)
  of ``importance_sum``, over every process's shard."""
  program = _importance_program(example, apply_fn)
  total, count = None, 0
  for batch in pipeline.eval_batches(examples, batch_size=batch_size,
                                     num_devices=1):
    part = program(variables, batch["image"][0], batch["mask"][0], num_seen)
    total = part if total is None else jax.tree.map(np.add, total, part)
    total = jax.device_get(total)
    count += int(batch["mask"].sum())
  if jax.process_count() > 1:
    total = jax.tree.map(lambda x: x.sum(0),
                         multihost_utils.process_allgather(total))
    count = int(np.sum(multihost_utils.process_allgather(np.int64(count))))
  return jax.tree.map(lambda x: x / count, total)


@functools.lru_cache(maxsize=None)
def _importance_program(example, apply_fn):
  return jax.jit(functools.partial(importance_sum, example, apply_fn))


def step_data_importance(example, ctx, t, apply_fn, variables, scratch):
  """``mean_importance`` over step ``t``'s own training data."""
  return mean_importance(
      example, apply_fn, variables, pipeline.filtered(
          ctx.source, "train", ctx.train_classes(t, scratch), ctx.mapping),
      ctx.num_seen(t), ctx.config.train.batch_size)


def combine(previous, importance, params, decay=1.0, merge_anchors=False):
  """The ``{"anchor", "importance"}`` after a step: ``importance`` (of the
  model ``params``) added to ``decay`` times the previous one (``None``
  after the first step). The anchor is ``params``, except with
  ``merge_anchors`` (EWC with a penalty per earlier step): sum_k F_k
  (theta - theta_k)^2 equals (sum_k F_k) (theta - theta*)^2 plus a
  constant, theta* the F-weighted mean of the theta_k, so one anchor and
  one importance carry every earlier step's penalty exactly."""
  if previous is None:
    return {"anchor": params, "importance": importance}
  total = jax.tree.map(lambda old, new: decay * old + new,
                       previous["importance"], importance)
  anchor = params
  if merge_anchors:
    def merged(f_old, a_old, f_new, p, f):
      # Below the smallest normal float, XLA's CPU flushes to zero: a
      # denormal sum would divide by zero. Such a weight holds nothing.
      weighty = f >= jnp.finfo(f.dtype).tiny
      return jnp.where(weighty, (f_old * a_old + f_new * p)
                       / jnp.where(weighty, f, 1.0), p)
    anchor = jax.tree.map(merged, previous["importance"], previous["anchor"],
                          importance, params, total)
  return {"anchor": anchor, "importance": total}


def weighted(state, weight):
  """The step's input: the anchor and ``weight`` times the importance."""
  return {"anchor": state["anchor"],
          "importance": jax.tree.map(lambda w: weight * w,
                                     state["importance"])}


@dataclasses.dataclass(frozen=True)
class Settings:
  weight: float  # multiplies the importance (``config.<name>.weight``)


def from_config(spec, config):
  """Fine-tuning of all layers plus the method's penalty, no distillation;
  the step leaves its own anchor and importance for the next."""
  return spec_lib.Method(spec, 0.0, consolidate=(spec.name,),
                         settings=Settings(float(config[spec.name].weight)))


def step_input(method, previous):
  """The train step's second input: the previous model's anchor and its
  importance times the method's weight."""
  return weighted(previous.penalty[method.name], method.settings.weight)


def weight_section(weight, **more):
  c = config_dict.ConfigDict()
  c.weight = weight
  for key, value in more.items():
    c[key] = value
  return c


def check_section(config, need, name, names):
  """``config.<name>.weight`` >= 0, and no given teacher when the run uses
  ``name``: its importance comes from the teacher's own training data."""
  weight = config[name].weight
  need(isinstance(weight, (int, float)) and weight >= 0,
       f"config.{name}.weight={weight!r} must be a number >= 0 (it "
       f"multiplies the {name} penalty; 0 is fine-tuning); use e.g. "
       f"--config.{name}.weight=1.0.")
  need(name not in names or not config.teacher.checkpoint,
       f"config.methods lists {name}, whose importance comes from the "
       f"teacher's own training data, but config.teacher.checkpoint="
       f"{config.teacher.checkpoint!r} is a given classifier without it; "
       f"remove {name} from config.methods, or train C_A here "
       f"(config.teacher.checkpoint='').")


def after_step(ctx, t, kinds, previous, apply_fn, start_params, variables,
               running, scratch):
  """``{kind: {"anchor", "importance"}}`` after step ``t`` for each
  regulariser of ``kinds`` (its ``Spec.importance``). ``previous`` is the
  previous step's (``None`` after a step from scratch); ``start_params``
  the parameters the step started from, ``running`` the running state of
  the step's training (SI's path integral)."""
  from cil_jax import methods  # pylint: disable=g-import-not-at-top
  out = {}
  with timer.section("importance"):
    for kind in kinds:
      out[kind] = jax.device_get(methods.get(kind).importance(
          ctx, t, (previous or {}).get(kind), apply_fn, start_params,
          variables, running, scratch))
  return out
