"""The generator synthesiser (``cil_jax.synthesis.generator``): its diversity term by
hand, training against a teacher, and device-count independence
(end to end on a BatchNorm CNN: ``tests/test_df_replay.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cil_jax.synthesis import generator
from cil_jax.models import build_model
from tests.helpers import tiny_model_config

SHAPE = (8, 8, 1)


@pytest.fixture(scope="module")
def teacher():
  model = build_model(tiny_model_config("mlp", hidden_sizes=(32, 32),
                                        batch_norm=True), 6)
  variables = jax.device_get(model.init(jax.random.PRNGKey(1),
                                        jnp.zeros((1, *SHAPE))))
  return model, variables


def test_diversity_is_log_k_minus_the_entropy_of_the_mean_prediction():
  num_old = jnp.int32(2)
  # Spread equally over the two old classes: 0.
  even = jnp.array([[0.5, 0.5, 0.0, 0.0]])
  assert float(generator.diversity(even, num_old)) == pytest.approx(0.0,
                                                                    abs=1e-6)
  # All on one class: log 2.
  one = jnp.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
  assert float(generator.diversity(one, num_old)) == pytest.approx(
      np.log(2), rel=1e-6)
  # Mean (0.75, 0.25) over a batch of two.
  rows = jnp.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
  entropy = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
  assert float(generator.diversity(rows, num_old)) == pytest.approx(
      np.log(2) - entropy, rel=1e-5)


def _settings(steps, learning_rate=1e-2):
  return generator.Settings(samples=96, steps=steps, batch_size=32, z_dim=8,
                            hidden=32, learning_rate=learning_rate)


def test_training_makes_the_teacher_predict_the_targets(teacher):
  model, variables = teacher
  key = jax.random.PRNGKey(3)
  before = generator.synthesize(model.apply, variables, 4, SHAPE, key,
                                _settings(1, learning_rate=1e-9))
  after = generator.synthesize(model.apply, variables, 4, SHAPE, key,
                               _settings(300))
  assert after["image"].shape == (96, *SHAPE)
  assert after["logits"].shape == (96, 6)
  assert (after["stats"]["target_hit"]
          > before["stats"]["target_hit"] + 0.15), (before, after)
  assert after["stats"]["final_bn"] < before["stats"]["final_bn"]
  # Balanced draws: 24 targets of each of the 4 old classes.
  assert after["stats"]["target_hit"] > 0.4


def test_eight_devices_give_what_one_gives(teacher):
  model, variables = teacher
  key = jax.random.PRNGKey(4)
  one = generator.synthesize(model.apply, variables, 3, SHAPE, key,
                             _settings(40))
  eight = generator.synthesize(model.apply, variables, 3, SHAPE, key,
                               _settings(40), jax.local_devices()[:8])
  assert len(jax.local_devices()) == 8
  np.testing.assert_allclose(one["image"], eight["image"], atol=1e-4)
  np.testing.assert_allclose(one["logits"], eight["logits"], atol=1e-4)

