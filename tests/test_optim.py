"""Optimizers and schedules from config values."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cil_jax import optim
from cil_jax import config_files

default = config_files.from_checkout("default")


def _config(**overrides):
  config = default.get_config().optim
  for key, value in overrides.items():
    config[key] = value
  return config


def test_cosine_schedule_with_warmup():
  schedule = optim.learning_rate_schedule(
      _config(learning_rate=0.1, warmup_steps=10), total_steps=110)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.05)  # linear warm-up
  assert float(schedule(10)) == pytest.approx(0.1)
  # Cosine over the remaining 100 steps: half-way is lr / 2.
  assert float(schedule(60)) == pytest.approx(0.05, rel=1e-5)
  assert float(schedule(110)) == pytest.approx(0.0, abs=1e-7)


def test_step_schedule_drops_at_fractions():
  schedule = optim.learning_rate_schedule(
      _config(schedule="step", learning_rate=1.0, step_boundaries=(0.5, 0.75),
              step_factor=0.1), total_steps=100)
  assert [float(schedule(s)) for s in (0, 49, 50, 74, 75, 99)] == (
      pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01]))


def test_sgd_momentum_and_weight_decay_by_hand():
  tx = optim.make_optimizer(
      _config(name="sgd", learning_rate=0.1, momentum=0.9,
              weight_decay=0.01, schedule="constant"), total_steps=10)
  params = {"w": jnp.array([1.0])}
  state = tx.init(params)
  grads = {"w": jnp.array([0.5])}
  # step 1: g + wd * w = 0.51; momentum buffer 0.51; update -0.051.
  updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(updates["w"], [-0.051], rtol=1e-6)
  params = optax.apply_updates(params, updates)  # w = 0.949
  # step 2: g' = 0.5 + 0.00949; buffer = 0.9 * 0.51 + g'.
  updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(updates["w"], [-0.1 * (0.459 + 0.50949)],
                             rtol=1e-6)


def test_adamw_decays_decoupled_from_the_gradient():
  tx = optim.make_optimizer(
      _config(name="adamw", learning_rate=0.1, weight_decay=0.5,
              schedule="constant"), total_steps=10)
  params = {"w": jnp.array([2.0])}
  updates, _ = tx.update({"w": jnp.array([0.0])}, tx.init(params), params)
  # Zero gradient: Adam's part is 0, decay is lr * wd * w = 0.1.
  np.testing.assert_allclose(updates["w"], [-0.1], rtol=1e-6)


def test_unknown_names_raise():
  with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'"):
    optim.make_optimizer(_config(name="rmsprop"), 10)
  with pytest.raises(ValueError, match="Unknown schedule 'linear'"):
    optim.make_optimizer(_config(schedule="linear"), 10)
