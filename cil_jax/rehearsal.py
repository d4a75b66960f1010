"""The pure parts of the rehearsal methods' steps and classifier.

- ``icarl`` (Rebuffi et al. 2017): binary cross-entropy per seen class
  (sigmoid outputs), the targets of the old classes the previous model's
  sigmoid outputs (distillation), of the new classes the one-hot label;
  on new data and memory rows alike. Prediction: the nearest mean of
  exemplars (``class_means``, ``nme_predict``).
- ``agem`` (Chaudhry et al. 2019, A-GEM): the new batch's gradient g is
  projected when it would raise the memory batch's loss, i.e. when its dot
  product with the memory batch's gradient g_ref is negative:
  g - (g . g_ref) / (g_ref . g_ref) * g_ref.
- ``lucir`` (Hou et al. 2019): cross-entropy on a cosine head, the
  less-forget constraint on features and the margin ranking loss on memory
  rows (``cil_jax.lucir``).
- ``bic`` (Wu et al. 2019): cross-entropy and LwF's distillation on new
  data and memory rows, then a bias correction of the new classes' logits
  (``cil_jax.bias_correction``).
"""

import jax
import jax.numpy as jnp
import optax

REHEARSALS = ("er", "icarl", "agem", "bic", "lucir")


def icarl_targets(teacher_logits, labels, num_old, num_seen):
  """``[rows, classes]`` targets: sigmoid of the previous model's logits
  for the first ``num_old`` classes, the one-hot ``labels`` for the
  classes ``num_old`` to ``num_seen``, 0 past them (masked anyway)."""
  position = jnp.arange(teacher_logits.shape[-1])
  one_hot = jax.nn.one_hot(labels, teacher_logits.shape[-1])
  targets = jnp.where(position < num_old, jax.nn.sigmoid(teacher_logits),
                      one_hot)
  return jnp.where(position < num_seen, targets, 0.0)


def sigmoid_distillation(logits, targets, num_seen):
  """Mean over rows of the binary cross-entropy summed over the first
  ``num_seen`` classes."""
  seen = jnp.arange(logits.shape[-1]) < num_seen
  per_class = optax.sigmoid_binary_cross_entropy(logits, targets)
  return jnp.mean(jnp.sum(jnp.where(seen, per_class, 0.0), axis=-1))


def agem_project(grads, ref_grads):
  """A-GEM: ``grads`` unchanged when ``<grads, ref_grads> >= 0``, else
  with their component along ``ref_grads`` removed (pytrees, one dot
  product over all leaves)."""
  def dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a),
                                               jax.tree.leaves(b)))
  product = dot(grads, ref_grads)
  scale = jnp.where(product < 0,
                    product / jnp.maximum(dot(ref_grads, ref_grads), 1e-30),
                    0.0)
  return jax.tree.map(lambda g, r: g - scale * r, grads, ref_grads)


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


def normalize(rows):
  return rows / jnp.maximum(jnp.linalg.norm(rows, axis=-1, keepdims=True),
                            1e-12)


def class_means(features, labels, num_classes):
  """``[num_classes, d]``: per class, the mean of its rows' L2-normalised
  ``features``, normalised again (iCaRL's class mean of exemplars); zero
  for a class without rows."""
  one_hot = jax.nn.one_hot(labels, num_classes)
  sums = one_hot.T @ normalize(features)
  return normalize(sums / jnp.maximum(one_hot.sum(0)[:, None], 1.0))


def nme_predict(features, means, num_seen):
  """The position of the nearest class mean (Euclidean, among the first
  ``num_seen``) to each L2-normalised feature row."""
  distances = jnp.sum(jnp.square(normalize(features)[:, None, :]
                                 - means[None]), axis=-1)
  seen = jnp.arange(means.shape[0]) < num_seen
  return jnp.argmin(jnp.where(seen, distances, jnp.inf), axis=-1)
