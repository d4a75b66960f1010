"""BiC's bias correction (Wu et al. CVPR 2019), pure.

After a step trained on new data and a small memory, the head favours the
new classes. BiC fits two scalars on a held-out split balanced over the
classes (part of the memory and as many examples of each new class, none
of which trained the step): the new classes' logits become
``alpha * z + beta``, the old ones stay, and (alpha, beta) minimise the
cross-entropy over the seen classes on that split, the model frozen.
Since the head is linear, the correction folds into it: the new columns
of the kernel times alpha, their bias ``alpha * b + beta``.
"""

import jax
import jax.numpy as jnp
import optax

from cil_jax import losses


def corrected(logits, alpha, beta, num_old, num_seen):
  """``logits`` with columns ``num_old`` to ``num_seen`` mapped to
  ``alpha * z + beta``."""
  position = jnp.arange(logits.shape[-1])
  new = (position >= num_old) & (position < num_seen)
  return jnp.where(new, alpha * logits + beta, logits)


def fit(logits, labels, num_old, num_seen, steps=500, learning_rate=0.05):
  """``(alpha, beta)`` minimising the cross-entropy over the first
  ``num_seen`` classes of the corrected ``logits`` (Adam from (1, 0))."""
  def loss(ab):
    return losses.cross_entropy(losses.mask_logits(
        corrected(logits, ab[0], ab[1], num_old, num_seen), num_seen),
                                labels)
  tx = optax.adam(learning_rate)

  def step(carry, _):
    ab, state = carry
    updates, state = tx.update(jax.grad(loss)(ab), state)
    return (optax.apply_updates(ab, updates), state), None
  ab = jnp.array([1.0, 0.0])
  (ab, _), _ = jax.lax.scan(step, (ab, tx.init(ab)), None, length=steps)
  return float(ab[0]), float(ab[1])
