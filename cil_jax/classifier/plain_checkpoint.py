"""Parameters saved without cil_jax: a plain orbax checkpoint directory, or
a ``.msgpack`` file of ``flax.serialization``.

Either may hold the variables (``{"params": ..., "batch_stats": ...}``) or
the ``params`` tree alone; ``load`` returns variables either way.
"""

import os

import flax.serialization
import jax
import numpy as np

from cil_jax.classifier import checkpoint
COLLECTIONS = ("params", "batch_stats")


def is_cil_jax_classifier(path):
  """Whether ``path`` holds cil_jax metadata (any format)."""
  return any(os.path.exists(os.path.join(path, f)) for f in (
      checkpoint.METADATA_FILE, "metadata.json"))


def load(path):
  """The host variables saved at ``path``."""
  path = os.path.abspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"No teacher checkpoint at {path}: it does not exist. Give an orbax "
        f"checkpoint directory or a flax.serialization .msgpack file.")
  fix = ("save the parameters again (orbax StandardCheckpointer, or "
         "flax.serialization.to_bytes to a .msgpack file)")
  if os.path.isfile(path):
    try:
      with open(path, "rb") as f:
        tree = flax.serialization.msgpack_restore(f.read())
    except Exception as e:  # pylint: disable=broad-except
      raise checkpoint.DamagedCheckpointError(
          f"The teacher checkpoint {path} is not a readable flax msgpack "
          f"file ({type(e).__name__}: {str(e)[:200]}); {fix}.") from None
  else:
    tree = checkpoint._restore(  # pylint: disable=protected-access
        path, "teacher checkpoint", fix,
        lambda: checkpoint.ocp().PyTreeCheckpointer().restore(path))
  if not isinstance(tree, dict):
    raise ValueError(f"The teacher checkpoint {path} holds a "
                     f"{type(tree).__name__}, not a dict of parameters; "
                     f"{fix}.")
  variables = tree if "params" in tree else {"params": tree}
  other = sorted(set(variables) - set(COLLECTIONS))
  if other:
    raise ValueError(
        f"The teacher checkpoint {path} holds collections {other} beside "
        f"'params'; cil_jax trains modules whose variables are "
        f"{list(COLLECTIONS)}. Save only those.")
  return jax.tree.map(np.asarray, variables)
