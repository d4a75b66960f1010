"""Class-incremental metrics from predictions on the test split.

``matrix[t][j]`` is the accuracy on group j's test examples after step t
(``None`` for groups not yet seen). Predictions are over all classes seen at
step t, so old-class errors include confusions with new classes.
"""

import numpy as np
from jax.experimental import multihost_utils

from cil_jax.data import pipeline


def class_counts(eval_step, variables, base, num_classes, batch_size,
                 num_devices):
  """``(correct, total)`` per output position over a dataset, summed over
  all processes; every example counted exactly once."""
  matrix = confusion(eval_step, variables, base, num_classes, batch_size,
                     num_devices)
  return np.diag(matrix).copy(), matrix.sum(axis=1)


def confusion(eval_step, variables, base, num_classes, batch_size,
              num_devices):
  """``matrix[label, prediction]``: test example counts by true and
  predicted output position, summed over all processes; every example
  counted exactly once."""
  counts = np.zeros(num_classes * num_classes, np.int64)
  for batch in pipeline.eval_batches(base, batch_size=batch_size,
                                     num_devices=num_devices):
    pred = np.asarray(eval_step(variables, batch["image"])).reshape(-1)
    mask = batch["mask"].reshape(-1)
    labels = batch["label"].reshape(-1)[mask]
    counts += np.bincount(labels * num_classes + pred[mask],
                          minlength=num_classes * num_classes)
  gathered = multihost_utils.process_allgather(counts)
  if gathered.ndim == 2:  # [processes, classes²] with several processes
    gathered = gathered.sum(0)
  return gathered.reshape(num_classes, num_classes)


def accuracy(correct, total, positions):
  """Accuracy over the examples whose label is in ``positions``."""
  positions = np.asarray(positions)
  n = total[positions].sum()
  if not n:
    raise ValueError(f"No test example has a label in {positions.tolist()}.")
  return float(correct[positions].sum() / n)


def step_metrics(correct, total, group_sizes):
  """Old/new/all accuracies and one row of the accuracy matrix for a step
  whose seen groups have ``group_sizes`` (the last group is the new one)."""
  bounds = np.cumsum([0] + list(group_sizes))
  row = [accuracy(correct, total, np.arange(lo, hi))
         for lo, hi in zip(bounds[:-1], bounds[1:])]
  num_old = int(bounds[-2])
  return {
      "acc_all": accuracy(correct, total, np.arange(bounds[-1])),
      "acc_old": (accuracy(correct, total, np.arange(num_old))
                  if num_old else None),
      "acc_new": row[-1],
      "accuracy_row": row,
      "num_test_examples": int(total[:bounds[-1]].sum()),
  }


def average_incremental_accuracy(all_accuracies):
  """Mean over steps of the accuracy on all classes seen so far (Rebuffi et
  al. 2017); step 0 included."""
  return float(np.mean(all_accuracies))


def forgetting(matrix):
  """Mean over groups j < last of ``max_{t<last} matrix[t][j] -
  matrix[last][j]`` (Chaudhry et al. 2018); ``None`` with one step."""
  last = len(matrix) - 1
  if last == 0:
    return None
  drops = [max(matrix[t][j] for t in range(j, last)) - matrix[last][j]
           for j in range(last)]
  return float(np.mean(drops))
