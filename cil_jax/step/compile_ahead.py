"""A class step's train program, compiled on a background thread while the
main thread initialises the model and prepares the step.

Lowering the pmapped step with the abstract types of its first call and
compiling it fills JAX's caches for those types, so the first real call
finds the program compiled: on a 2-core CPU the run's two first compiles
(the initialisation's, ``StepContext.prefetch_init``, and this one) overlap
instead of following each other. ``fit`` waits for it before its first
step, so a program is never compiled twice. Only the common case is
started (device-resident data without augmentation or replay, a single
member, no teacher run inside the step, no SI path integral); anything
else compiles on its first call, as without this module.
"""

from concurrent import futures

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from cil_jax.step import train_step as ts
from cil_jax.data import train_data as train_data_lib
from cil_jax.parallel import BATCH_AXIS

_EXECUTOR = futures.ThreadPoolExecutor(1, "cil_jax_compile")


def start(*, models, variables, train_data, num_old, num_seen, config,
          devices, data_seed, dropout_key, whole_epochs, num_outputs):
  """A future of the compile of ``models.train_step`` for a member whose
  variables have the shapes of ``variables`` (``jax.ShapeDtypeStruct``
  leaves), or ``None`` where the case is not covered."""
  if (train_data.mode != "device" or train_data.augment
      or "running" in variables):
    return None
  mesh = Mesh(np.asarray(devices), (BATCH_AXIS,))
  sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))

  def replicated(shape):  # as ``parallel.replicate`` lays a leaf out
    return jax.ShapeDtypeStruct((len(devices), *shape.shape), shape.dtype,
                                sharding=sharding)

  total_steps = config.train.epochs * train_data.steps_per_epoch
  state = jax.tree.map(replicated, jax.eval_shape(
      lambda v: ts.create_state(v, models.tx, 0.0, 1.0, num_old, num_seen,
                                total_steps), variables))
  resident = dict(train_data.resident)
  if models.teacher_logits_fn is not None:  # precomputed or zero logits
    resident["teacher_logits"] = replicated(jax.ShapeDtypeStruct(
        (len(train_data.split.label), num_outputs), np.float32))
  if whole_epochs:
    step_fn = ts.pmap_train_epoch(models.train_step, train_data.batch_fn)
    feed = next(train_data_lib.epoch_chunks(train_data, data_seed, 1,
                                            ts.CHUNK))
  else:
    step_fn = ts.pmap_train_step(models.train_step, train_data.batch_fn)
    feed = next(iter(train_data.epoch(data_seed, 1)))
  return _EXECUTOR.submit(
      lambda: step_fn.lower(state, {}, resident, feed, dropout_key).compile())


def wait(future):
  """Waits for ``future`` (``start``'s, or ``None``). A compile that
  failed is left to the step's first call, which raises what it raises."""
  if future is not None:
    future.exception()
