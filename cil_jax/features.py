"""Penultimate features and the classifier on them that several methods
share: the head's input (``features``), per-class
means and the nearest-class-mean classifier (iCaRL's NME; herding's
exemplar selection and LUCIR's less-forget constraint read the same
features).
"""

import jax
import jax.numpy as jnp

from cil_jax.models.layers import l2_normalize


def features(apply_fn, variables, images):
  """The penultimate features, the head's input, in inference mode: the
  adapter's output if the model has one, else the backbone's (flax's
  captured intermediates)."""
  _, state = apply_fn(variables, images, train=False,
                      mutable=["intermediates"],
                      capture_intermediates=capture_features)
  return captured_features(state)


def capture_features(module, method):
  """flax's ``capture_intermediates`` filter for the head's input."""
  return module.name in ("backbone", "adapter") and method == "__call__"


def captured_features(state):
  """The head's input from an apply's mutable ``state`` captured with
  ``capture_features``."""
  captured = state["intermediates"]
  return captured.get("adapter", captured["backbone"])["__call__"][0]


def class_means(features, labels, num_classes):
  """``[num_classes, d]``: per class, the mean of its rows' L2-normalised
  ``features``, normalised again (iCaRL's class mean of exemplars); zero
  for a class without rows."""
  one_hot = jax.nn.one_hot(labels, num_classes)
  sums = one_hot.T @ l2_normalize(features)
  return l2_normalize(sums / jnp.maximum(one_hot.sum(0)[:, None], 1.0))


def nme_predict(features, means, num_seen):
  """The position of the nearest class mean (Euclidean, among the first
  ``num_seen``) to each L2-normalised feature row."""
  distances = jnp.sum(jnp.square(l2_normalize(features)[:, None, :]
                                 - means[None]), axis=-1)
  seen = jnp.arange(means.shape[0]) < num_seen
  return jnp.argmin(jnp.where(seen, distances, jnp.inf), axis=-1)
