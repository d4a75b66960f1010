"""Class-incremental metrics against hand-computed numbers."""

import numpy as np
import pytest

from cil_jax import evaluate


def test_step_metrics_old_new_all_and_matrix_row():
  # Positions {0, 1} are old, {2} new; correct / total per position.
  correct = np.array([1, 2, 3])
  total = np.array([2, 2, 4])
  m = evaluate.step_metrics(correct, total, [2, 1])
  assert m["acc_old"] == pytest.approx(3 / 4)
  assert m["acc_new"] == pytest.approx(3 / 4)
  assert m["acc_all"] == pytest.approx(6 / 8)
  assert m["accuracy_row"] == pytest.approx([3 / 4, 3 / 4])
  assert m["num_test_examples"] == 8


def test_first_step_has_no_old_accuracy():
  m = evaluate.step_metrics(np.array([1, 0]), np.array([2, 0]), [2])
  assert m["acc_old"] is None and m["acc_all"] == 0.5


def test_average_incremental_accuracy_and_forgetting():
  matrix = [[0.9], [0.6, 0.8], [0.5, 0.7, 0.95]]
  assert evaluate.average_incremental_accuracy(
      [0.9, 0.7, 0.7]) == pytest.approx(2.3 / 3)
  # group 0: max(0.9, 0.6) - 0.5 = 0.4; group 1: 0.8 - 0.7 = 0.1.
  assert evaluate.forgetting(matrix) == pytest.approx(0.25)
  assert evaluate.forgetting([[0.9]]) is None


def test_accuracy_refuses_an_empty_class_set():
  with pytest.raises(ValueError, match="No test example"):
    evaluate.accuracy(np.array([1, 0]), np.array([1, 0]), [1])
