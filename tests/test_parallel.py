"""``parallel.pmean`` (no collective on one device) and the epoch program
of ``train_step.pmap_train_epoch`` (only the valid prefix of a chunk runs)."""

import jax
import jax.numpy as jnp
import numpy as np

from cil_jax import parallel
from cil_jax.step import train_step as ts
def _pmapped_mean(num_devices):
  devices = jax.local_devices()[:num_devices]
  values = np.arange(num_devices * 3, dtype=np.float32).reshape(
      num_devices, 3) / 7.0
  out = jax.pmap(parallel.pmean, axis_name=parallel.BATCH_AXIS,
                 devices=devices)(values)
  return values, np.asarray(out)


def test_pmean_of_one_device_is_the_value_bit_for_bit():
  values, out = _pmapped_mean(1)
  np.testing.assert_array_equal(out, values)


def test_pmean_of_one_device_runs_no_all_reduce():
  hlo = jax.pmap(parallel.pmean, axis_name=parallel.BATCH_AXIS,
                 devices=jax.local_devices()[:1]).lower(
                     np.ones((1, 3), np.float32)).as_text()
  assert "all_reduce" not in hlo and "all-reduce" not in hlo


def test_pmean_over_devices_is_their_mean():
  values, out = _pmapped_mean(4)
  np.testing.assert_allclose(out, np.broadcast_to(values.mean(0), (4, 3)),
                             rtol=1e-6)


def _counting_step(state, teacher, batch, rng):
  del teacher, rng
  total = parallel.pmean(jnp.sum(batch["value"]))
  return ({"step": state["step"] + 1, "sum": state["sum"] + total},
          {"value": total})


def _batch(resident, feed):
  del resident
  return feed


def test_epoch_chunk_runs_the_valid_prefix_only():
  num_devices, length, valid = 2, 5, 3
  values = np.arange(num_devices * length * 4, dtype=np.float32).reshape(
      num_devices, length, 4)
  feeds = {"value": values,
           "valid": np.tile(np.arange(length) < valid, (num_devices, 1))}
  state = parallel.replicate({"step": np.int32(0), "sum": np.float32(0)},
                             jax.local_devices()[:num_devices])
  step_fn = ts.pmap_train_epoch(_counting_step, _batch)
  state, metrics = step_fn(state, {}, {}, feeds, np.zeros(2, np.uint32))
  per_step = values.sum(-1).mean(0)  # each step's device mean
  np.testing.assert_array_equal(np.asarray(state["step"]), [valid] * 2)
  np.testing.assert_allclose(np.asarray(state["sum"]),
                             [per_step[:valid].sum()] * 2, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(metrics["value"][0]),
                             np.concatenate([per_step[:valid],
                                             np.zeros(length - valid)]),
                             rtol=1e-6)
