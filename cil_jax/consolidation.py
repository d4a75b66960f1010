"""What a regularisation method's step leaves for the next: per regulariser
(``ewc``, ``si``, ``mas``, ``cil_jax.regularizers``) the anchor and the
importance of the model the step trained.

Computed at the end of the step, from the step's own training data, which
is never kept (these methods store no old data): ``after_step`` returns
``{regulariser: {"anchor", "importance"}}``, which the step directory
keeps (``step_outputs.save_penalty``) so a resumed run reads it instead of
recomputing it. C_A (step 0, shared by every method of a run) leaves one
per regulariser the run's methods use.
"""

import functools

import jax
import numpy as np
from jax.experimental import multihost_utils

from cil_jax import regularizers
from cil_jax import timer
from cil_jax.data import pipeline


def after_step(ctx, t, kinds, previous, apply_fn, start_params, variables,
               path_integral, scratch):
  """``{kind: state}`` for each of ``kinds`` after step ``t``.

  ``previous`` is the previous step's ``{kind: state}`` (``None`` after a
  step from scratch); ``start_params`` the parameters the step started
  from and ``path_integral`` SI's running sum over the step (both for
  ``si``); ``apply_fn`` the model's flax apply."""
  config = ctx.config
  params = variables["params"]
  out = {}
  with timer.section("importance"):
    for kind in kinds:
      if kind == "si":
        importance = regularizers.si_importance(
            path_integral, start_params, params, config.si.damping)
      else:
        importance = mean_importance(
            kind, apply_fn, variables, pipeline.filtered(
                ctx.source, "train", ctx.train_classes(t, scratch),
                ctx.mapping),
            ctx.num_seen(t), config.train.batch_size)
      online = kind == "ewc" and config.ewc.online
      out[kind] = jax.device_get(regularizers.combine(
          (previous or {}).get(kind), importance, params,
          decay=config.ewc.decay if online else 1.0,
          merge_anchors=kind == "ewc" and not online))
  return out


def mean_importance(kind, apply_fn, variables, examples, num_seen,
                    batch_size):
  """The mean over ``examples`` (``pipeline.Examples`` or a tf.data split)
  of ``regularizers.importance_sum``, over every process's shard."""
  program = _importance_program(kind, apply_fn)
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
def _importance_program(kind, apply_fn):
  return jax.jit(functools.partial(regularizers.importance_sum, kind,
                                   apply_fn))
