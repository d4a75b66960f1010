"""Weight aligning against hand-computed norms, and both eps_kd knobs of
issue 12 (local CE, weight aligning) end to end on digits."""

import math
import os

import numpy as np
import pytest

from cil_jax.classifier import checkpoint
from cil_jax import rebalance
from cil_jax import train
from cil_jax.bench.setup import random_variables
from cil_jax.models import build_model
from tests.helpers import small_config


def _head():
  # Columns: two old of norms 5 and 1 (mean 3), two new of norms 10 and 2
  # (mean 6), one unseen.
  kernel = np.array([[3.0, 1.0, 6.0, 0.0, 7.0],
                     [4.0, 0.0, 8.0, 2.0, -1.0]], np.float32)
  bias = np.array([0.5, -0.5, 2.0, -4.0, 9.0], np.float32)
  return {"kernel": kernel, "bias": bias}


def test_align_weights_by_hand():
  head = _head()
  aligned, gamma = rebalance.align_weights(head, num_old=2, num_seen=4)
  assert gamma == pytest.approx(3.0 / 6.0)
  np.testing.assert_allclose(aligned["kernel"][:, 2:4],
                             [[3.0, 0.0], [4.0, 1.0]])
  np.testing.assert_allclose(aligned["bias"][2:4], [1.0, -2.0])
  norms = np.linalg.norm(aligned["kernel"], axis=0)
  assert norms[2:4].mean() == pytest.approx(norms[:2].mean(), rel=1e-6)
  # Old and unseen columns bit-identical; the input is not modified.
  for key in ("kernel", "bias"):
    np.testing.assert_array_equal(aligned[key][..., :2], head[key][..., :2])
    np.testing.assert_array_equal(aligned[key][..., 4:], head[key][..., 4:])
    np.testing.assert_array_equal(head[key], _head()[key])
    assert aligned[key].dtype == np.float32


def test_align_weights_scales_the_new_logits():
  head = _head()
  aligned, gamma = rebalance.align_weights(head, 2, 4)
  features = np.array([[0.3, -1.2]], np.float32)
  logits = features @ head["kernel"] + head["bias"]
  new_logits = features @ aligned["kernel"] + aligned["bias"]
  np.testing.assert_allclose(new_logits[:, 2:4], gamma * logits[:, 2:4],
                             rtol=1e-6)
  np.testing.assert_array_equal(new_logits[:, :2], logits[:, :2])


@pytest.mark.parametrize("num_old,num_seen", [(0, 3), (3, 3), (2, 6)])
def test_align_weights_rejects_bad_counts(num_old, num_seen):
  with pytest.raises(ValueError, match="0 < num_old < num_seen <= 5"):
    rebalance.align_weights(_head(), num_old, num_seen)


def test_local_ce_and_weight_aligning_end_to_end(tmp_path):
  config = small_config(**{"methods": "eps_kd", "train.epochs": 2,
                           "eps_kd.ce_form": "local",
                           "eps_kd.weight_aligning": True})
  results = train.run(config, str(tmp_path))
  # Local CE never pushes old logits down: the old classes stay known.
  assert results["methods"]["eps_kd"]["steps"][1]["acc_old"] > 0.8
  saved, _ = checkpoint.load_classifier(
      os.path.join(tmp_path, "eps_kd", "step_1", "classifier"),
      random_variables(build_model(config.model, 10), (8, 8, 1), seed=0))
  norms = np.linalg.norm(saved["params"]["head"]["kernel"], axis=0)
  assert norms.shape == (10,)
  assert math.isclose(norms[5:].mean(), norms[:5].mean(), rel_tol=1e-5)
