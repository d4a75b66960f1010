"""A classifier written the way someone outside cil_jax would: its own
module and parameter names, its own input scaling, trained with plain optax
and saved with plain orbax (tests/test_byo_*.py import it by path)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp


class Stem(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x):
    return nn.gelu(nn.Dense(self.width, name="proj")(x))


class DigitNet(nn.Module):
  """Takes digits pixels scaled to [0, 1]; ``deterministic`` switches
  dropout off (its own keyword, not cil_jax's ``train``)."""
  width: int = 32
  n_out: int = 6

  @nn.compact
  def __call__(self, images, deterministic=True):
    x = images.reshape((images.shape[0], -1))
    x = Stem(self.width, name="encoder")(x)
    x = nn.Dropout(0.1, deterministic=deterministic)(x)
    x = nn.relu(nn.Dense(self.width, name="mixer")(x))
    return nn.Dense(self.n_out, name="cls_logits")(x)


class TwinHeads(nn.Module):
  """Two Dense layers of the class count: the head is ambiguous."""

  @nn.compact
  def __call__(self, images):
    x = images.reshape((images.shape[0], -1))
    x = nn.Dense(6, name="bottleneck")(x)
    return nn.Dense(6, name="out")(x)


def digits_unit(classes, which="train"):
  """Digits of ``classes`` scaled to [0, 1], with labels remapped to
  output positions: the user's own data handling."""
  from cil_jax.data import digits  # pylint: disable=g-import-not-at-top
  images, labels = digits.load()[which]
  keep = np.isin(labels, classes)
  position = {c: i for i, c in enumerate(classes)}
  return (images[keep] / 16.0, np.asarray([position[y] for y in labels[keep]],
                                          np.int32))


@functools.lru_cache(maxsize=None)
def trained_digitnet(classes=(0, 1, 2, 3, 4, 5)):
  """DigitNet trained on ``classes``, once per test session."""
  module = DigitNet()
  return module, train_plain(module, list(classes))


def train_plain(module, classes, steps=80, seed=0):
  """Plain optax training of ``module`` on ``classes``; returns params."""
  images, labels = digits_unit(classes)
  params = module.init(jax.random.PRNGKey(seed), images[:1])["params"]
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y, key):
    def loss(p):
      logits = module.apply({"params": p}, x, deterministic=False,
                            rngs={"dropout": key})
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  for i in range(steps):
    idx = rng.choice(len(images), 64, replace=False)
    params, opt_state = step(params, opt_state, images[idx], labels[idx],
                             jax.random.PRNGKey(i))
  return params


def accuracy(module, params, classes):
  images, labels = digits_unit(classes, "test")
  logits = module.apply({"params": params}, images)
  return float(np.mean(np.argmax(logits, -1) == labels))


def save_plain(path, tree):
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, tree)
  checkpointer.wait_until_finished()


class LogProbNet(nn.Module):
  """Returns log-probabilities: widening its head changes the old outputs,
  which the step-start check must catch."""

  @nn.compact
  def __call__(self, images):
    x = images.reshape((images.shape[0], -1))
    x = nn.relu(nn.Dense(16, name="body")(x))
    return jax.nn.log_softmax(nn.Dense(6, name="logits")(x))
