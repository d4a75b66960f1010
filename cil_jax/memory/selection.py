"""The exemplar memory of the rehearsal methods: pure selection and budget.

A memory is ``{"index", "label"}``, int32 arrays of one length: rows of the
process's training split (``Source.arrays("train")``) and their output
positions, grouped by class in class order and, within a class, in the
order they were selected. Keeping a class's first ``m`` rows is then its
best ``m`` under herding (each pick is the best given the earlier ones) and
a random ``m`` under random selection, so shrinking a class as new ones
arrive never selects again.

The budget is ``size`` exemplars in all, shared equally by the seen classes
(``size // seen`` each; iCaRL's fixed K), or ``per_class`` each.

- herding (Rebuffi et al. 2017, iCaRL): greedily add the example that
  brings the mean of the chosen L2-normalised features closest to the
  class's mean feature;
- random: a uniform draw without replacement, seeded per (run, step,
  class).
"""

import numpy as np

SELECTIONS = ("herding", "random")


def empty():
  return {"index": np.zeros(0, np.int32), "label": np.zeros(0, np.int32)}


def quota(size, per_class, num_seen):
  """Exemplars per class with ``num_seen`` classes seen."""
  return per_class if per_class else size // num_seen


def normalize(features):
  """Rows scaled to unit L2 norm (a zero row stays zero)."""
  norms = np.linalg.norm(features, axis=-1, keepdims=True)
  return features / np.maximum(norms, 1e-12)


def herding(features, m):
  """The positions of ``m`` rows of ``features`` ``[n, d]`` (L2-normalised)
  in herding order: the k-th is the row that brings the mean of the k
  chosen closest to the mean of all rows, ties to the first row.

  ||mu - (S + f)/k||^2 = ||S + f||^2 / k^2 - 2 <mu, S + f> / k + const,
  with S the sum of the chosen; <S, f> for every row is kept up to date
  with one matrix-vector product per pick."""
  features = np.asarray(features, np.float64)
  n = len(features)
  m = min(m, n)
  mu = features.mean(axis=0)
  mu_dot = features @ mu
  sq_norms = np.einsum("nd,nd->n", features, features)
  sum_dot = np.zeros(n)  # <S, f_i>
  sum_sq = 0.0  # ||S||^2
  sum_mu = 0.0  # <S, mu>
  free = np.ones(n, bool)
  chosen = []
  for k in range(1, m + 1):
    score = ((sum_sq + 2 * sum_dot + sq_norms) / k**2
             - 2 * (sum_mu + mu_dot) / k)
    i = int(np.argmin(np.where(free, score, np.inf)))
    chosen.append(i)
    free[i] = False
    sum_sq += 2 * sum_dot[i] + sq_norms[i]
    sum_mu += mu_dot[i]
    sum_dot += features @ features[i]
  return np.asarray(chosen, np.int64)


def random_order(n, m, seed):
  """``min(m, n)`` distinct positions below ``n``, drawn with ``seed``
  (a sequence of ints)."""
  return np.random.default_rng(list(seed)).permutation(n)[:min(m, n)]


def trim(memory, per_class):
  """Each class's first ``per_class`` rows."""
  keep = np.zeros(len(memory["label"]), bool)
  for label in np.unique(memory["label"]):
    keep[np.flatnonzero(memory["label"] == label)[:per_class]] = True
  return {k: v[keep] for k, v in memory.items()}


def hold_out(memory, per_class):
  """``(kept, held)``: each class's last ``per_class`` rows held out (the
  last selected, so the kept ones are still its first picks)."""
  held = np.zeros(len(memory["label"]), bool)
  for label in np.unique(memory["label"]):
    rows = np.flatnonzero(memory["label"] == label)
    held[rows[len(rows) - per_class:]] = True
  return ({k: v[~held] for k, v in memory.items()},
          {k: v[held] for k, v in memory.items()})


def add(memory, label, rows):
  """``memory`` with class ``label``'s selected training ``rows`` (in
  selection order) appended."""
  return {"index": np.concatenate([memory["index"],
                                   np.asarray(rows, np.int32)]),
          "label": np.concatenate([memory["label"],
                                   np.full(len(rows), label, np.int32)])}


def check(memory, num_seen, budget):
  """Raises ``ValueError`` unless ``memory`` holds only classes below
  ``num_seen`` and at most ``budget`` rows, each row once."""
  labels, index = memory["label"], memory["index"]
  if len(labels) > budget:
    raise ValueError(f"The exemplar memory holds {len(labels)} rows, over "
                     f"its budget of {budget}.")
  if len(labels) and (labels.min() < 0 or labels.max() >= num_seen):
    raise ValueError(f"The exemplar memory holds classes "
                     f"{sorted(set(labels.tolist()))} outside the "
                     f"{num_seen} seen ones.")
  if len(np.unique(index)) != len(index):
    raise ValueError("The exemplar memory holds a training row twice.")
