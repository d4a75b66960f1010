"""Growing a classifier's head: old columns copied, new columns freshly
initialised; and resizing a head between a saved classifier's width (its
classes) and the width allocated for a whole class sequence."""

import jax
import numpy as np
from flax import traverse_util

from cil_jax.models.layers import SCALE

HEAD = "head"


def expand_variables(old_variables, new_variables, num_old, head_path=HEAD):
  """Copies a trained model into a freshly initialised, wider one.

  ``new_variables`` comes from ``init`` of the wider model. Every leaf that
  exists in ``old_variables`` is copied; the head's kernel and bias keep
  their first ``num_old`` columns from the old model (whose head may be
  wider, its further columns unused) and the rest from the fresh init.
  Leaves only in the new model (an adapter) keep their init. A leaf present
  in both with another shape is a model mismatch and raises. ``head_path``
  is the head's slash path inside each collection (a foreign module's).
  """
  old_flat = traverse_util.flatten_dict(jax.device_get(old_variables), sep="/")
  new_flat = traverse_util.flatten_dict(jax.device_get(new_variables), sep="/")
  missing = sorted(set(old_flat) - set(new_flat))
  if missing:
    raise ValueError(f"The old model has parameters the new one lacks: "
                     f"{missing[:5]}; teacher and student must be the same "
                     f"architecture (check config.model).")
  merged = {}
  for path, fresh in new_flat.items():
    if path not in old_flat:
      merged[path] = fresh
      continue
    old = np.asarray(old_flat[path])
    if _is_head(path, head_path):
      if (old.shape[:-1] != fresh.shape[:-1] or old.shape[-1] < num_old
          or num_old > fresh.shape[-1]):
        raise ValueError(f"Head {path} of shape {old.shape} cannot grow to "
                         f"{fresh.shape} with {num_old} old classes.")
      merged[path] = np.concatenate(
          [old[..., :num_old], np.asarray(fresh)[..., num_old:]], axis=-1)
    elif old.shape != fresh.shape:
      raise ValueError(f"Parameter {path} has shape {old.shape} in the old "
                       f"model but {fresh.shape} in the new one; check that "
                       f"config.model matches the teacher.")
    else:
      merged[path] = old
  return traverse_util.unflatten_dict(merged, sep="/")


def resize_head(variables, num_outputs, head_path=HEAD):
  """``variables`` with the head cut or zero-padded to ``num_outputs``
  columns (host arrays). Cutting saves a sequence-wide model as a classifier
  of the classes seen so far; padding gives a loaded one the sequence's
  width, the padded columns masked until their classes arrive."""
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
  out = {}
  for path, value in flat.items():
    value = np.asarray(value)
    if _is_head(path, head_path):
      width = value.shape[-1]
      if width >= num_outputs:
        value = value[..., :num_outputs]
      else:
        pad = [(0, 0)] * (value.ndim - 1) + [(0, num_outputs - width)]
        value = np.pad(value, pad)
    out[path] = value
  return traverse_util.unflatten_dict(out, sep="/")


def _is_head(path, head_path):
  """Whether ``collection/<...>/leaf`` is a leaf of the head with a column
  per class (the cosine head's scale is one number, copied whole)."""
  parts = path.split("/")
  return (len(parts) >= 3 and "/".join(parts[1:-1]) == head_path
          and parts[-1] != SCALE)
