"""Class-incremental metrics from predictions on the test split.

``matrix[t][j]`` is the accuracy on group j's test examples after step t
(``None`` for groups not yet seen). Predictions are over all classes seen at
step t, so old-class errors include confusions with new classes.
"""

import numpy as np

from cil_jax.data import batches


def predict(eval_step, variables, images, labels, batch_size, num_devices):
  """Predicted output positions for every example, in order."""
  predictions = []
  for batch in batches.eval_batches(images, labels, batch_size, num_devices):
    pred = np.asarray(eval_step(variables, batch["image"])).reshape(-1)
    predictions.append(pred[batch["mask"].reshape(-1)])
  return np.concatenate(predictions)


def accuracy(predictions, labels, positions):
  """Accuracy on examples whose label is in ``positions``."""
  keep = np.isin(labels, positions)
  if not keep.any():
    raise ValueError(f"No test example has a label in {list(positions)}.")
  return float(np.mean(predictions[keep] == labels[keep]))


def step_metrics(predictions, labels, group_sizes):
  """Old/new/all accuracies and one row of the accuracy matrix for a step
  whose seen groups have ``group_sizes`` (the last group is the new one)."""
  bounds = np.cumsum([0] + list(group_sizes))
  row = [accuracy(predictions, labels, np.arange(lo, hi))
         for lo, hi in zip(bounds[:-1], bounds[1:])]
  num_old = int(bounds[-2])
  return {
      "acc_all": accuracy(predictions, labels, np.arange(bounds[-1])),
      "acc_old": (accuracy(predictions, labels, np.arange(num_old))
                  if num_old else None),
      "acc_new": row[-1],
      "accuracy_row": row,
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
