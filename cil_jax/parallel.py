"""The data-parallel layout every pmapped function shares.

One mesh axis, ``BATCH_AXIS``, over the local devices: training and
evaluation batches are split along it, parameters and the teacher are
replicated along it, and ``lax.pmean``/``lax.axis_index`` name it. This is the
only module that defines it.
"""

import jax
import numpy as np
from flax import jax_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

BATCH_AXIS = "batch"


def replicate(tree, devices):
  """One copy of ``tree`` per device, laid out as a pmapped function returns
  its outputs (sharded over a ``BATCH_AXIS`` mesh), so feeding a step's
  output state back in does not trigger a second compilation."""
  sharding = NamedSharding(Mesh(np.asarray(devices), (BATCH_AXIS,)),
                           PartitionSpec(BATCH_AXIS))
  return jax.device_put(jax_utils.replicate(tree, devices), sharding)


def unreplicate(tree):
  """The first replica of a replicated tree, on the host.

  Indexed rather than ``jax_utils.unreplicate``, which takes each array's
  first addressable shard: under the ``BATCH_AXIS`` sharding of
  ``replicate`` that shard keeps a leading axis of size 1.
  """
  return jax.device_get(jax.tree.map(lambda x: x[0], tree))
