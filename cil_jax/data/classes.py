"""Class sequences: which dataset classes each step adds, and label remapping.

Model outputs follow the class order: output i scores ``order[i]``. The
classes seen up to a step are therefore always a prefix of the outputs, and
the old classes of a step are the first ``num_old`` outputs.
"""

import numpy as np


def class_sequence(groups, num_dataset_classes, order_seed=None):
  """Validated list of class-id lists, optionally reshuffled.

  With ``order_seed`` the ids used by ``groups`` are permuted with that seed
  and re-split into groups of the same sizes (a random class order, as in
  iCaRL/PyCIL benchmarks).
  """
  groups = [list(int(c) for c in group) for group in groups]
  if not groups:
    raise ValueError("config.classes.groups is empty; give at least one "
                     "group, e.g. ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9)).")
  seen = set()
  for step, group in enumerate(groups):
    if not group:
      raise ValueError(f"config.classes.groups: group {step} is empty; "
                       f"every step needs at least one class.")
    for class_id in group:
      if not 0 <= class_id < num_dataset_classes:
        raise ValueError(f"config.classes.groups: class id {class_id} in "
                         f"group {step} is outside the dataset's classes "
                         f"0..{num_dataset_classes - 1}; use ids in that "
                         f"range.")
      if class_id in seen:
        raise ValueError(f"config.classes.groups: class {class_id} appears "
                         f"twice; groups must not overlap.")
      seen.add(class_id)
  if order_seed is not None:
    flat = np.random.default_rng(order_seed).permutation(
        [c for g in groups for c in g]).tolist()
    sizes = np.cumsum([len(g) for g in groups])[:-1]
    groups = [part.tolist() for part in np.split(np.asarray(flat), sizes)]
  return groups


def label_map(order, num_dataset_classes):
  """Array mapping dataset class id -> output position (-1 if unused)."""
  mapping = np.full(num_dataset_classes, -1, dtype=np.int32)
  mapping[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
  return mapping
