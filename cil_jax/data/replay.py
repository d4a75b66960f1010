"""Extra rows beside every batch: synthetic old-class inputs (data-free
replay) or the exemplar memory (rehearsal).

A replay set (``cil_jax.synthesis.inversion.synthesize``: inputs and the teacher's
logits on them; or ``cil_jax.memory.exemplars.replay_set``: stored old-class rows,
their labels and, for iCaRL, the previous model's logits) is placed on
every device once per class step, in the step's ``resident`` data;
``with_replay`` wraps a data ``batch_fn`` so each device's batch also
carries ``replay_<key>`` for each of the set's arrays (``replay_image``,
``replay_logits``, ``replay_label``), rows drawn uniformly with
replacement. The draw's key comes from the feed's
data order (epoch seed, step index) and the device index, like
augmentation's, so members of a stack see the same rows and a resumed run
draws what it drew before. Either placement's data gets it the same way.
"""

import copy
import functools

import jax

from cil_jax import parallel
from cil_jax.data import augment as augment_lib

# Folded into the augmentation key so replay rows are drawn independently
# of the crop and flip of the same step.
_SALT = 0x5E9

def attach(data, replay, rows_per_device, devices):
  """A copy of a step's training ``data`` (``train_data``) whose batches
  carry ``rows_per_device`` rows of ``replay`` (``image`` and ``logits``
  and/or ``label`` host arrays) per device. With ``count``, only the
  first ``count`` rows are drawn: an exemplar memory padded to its
  budget keeps one shape, and one compiled step, over the steps."""
  data = copy.copy(data)
  data.resident = dict(data.resident, replay=parallel.replicate(
      {k: replay[k] for k in ("image", "logits", "label", "count")
       if k in replay}, devices))
  data.batch_fn = with_replay(data.batch_fn, rows_per_device)
  return data


@functools.lru_cache(maxsize=None)
def with_replay(batch_fn, rows):
  """``batch_fn`` plus ``rows`` replay rows per device (cached, so the
  pmapped step built on it compiles once per data layout)."""
  def replay_batch_fn(resident, feed):
    batch = batch_fn(resident, feed)
    replay = resident["replay"]
    key = jax.random.fold_in(augment_lib.device_key(feed["augment_seed"]),
                             _SALT)
    count = replay.get("count", replay["image"].shape[0])
    index = jax.random.randint(key, (rows,), 0, count)
    return dict(batch, **{f"replay_{k}": v[index]
                          for k, v in replay.items() if k != "count"})
  return replay_batch_fn
