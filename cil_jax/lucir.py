"""LUCIR's loss terms (Hou et al. CVPR 2019, "Learning a Unified Classifier
Incrementally via Rebalancing"), pure.

The model has a cosine head (``config.model.cosine_head``,
``models.layers.CosineHead``): logits ``sigma * cos(f(x), w_c)``. A step
trains on new data and exemplar memory rows with

    CE over the seen classes (all rows)
    + lambda * less_forget (all rows)
    + mr_weight * margin_ranking (memory rows),

``lambda = lambda_base * sqrt(num_old / num_new)`` (the paper's adaptive
weight: more old classes, more constraint).
"""

import dataclasses

import jax
import jax.numpy as jnp

from cil_jax import rehearsal


@dataclasses.dataclass(frozen=True)
class Settings:
  """``config.lucir``: the less-forget constraint's ``lambda_base``, the
  margin ranking loss's ``margin``, ``top_k`` hard negatives and weight
  ``mr_weight``."""
  lambda_base: float = 5.0
  margin: float = 0.5
  top_k: int = 2
  mr_weight: float = 1.0


def settings_from(c):
  return Settings(float(c.lambda_base), float(c.margin), int(c.top_k),
                  float(c.mr_weight))


def _normalize(rows):
  """``rehearsal.normalize`` in float32 (features may be bfloat16)."""
  return rehearsal.normalize(jnp.asarray(rows, jnp.float32))


def less_forget(features, old_features):
  """Mean over rows of ``1 - cos(features, old_features)``: the new
  model's penultimate features against the previous model's on the same
  inputs (0 when they point the same way, 1 when orthogonal)."""
  return jnp.mean(1.0 - jnp.sum(_normalize(features)
                                * _normalize(old_features), axis=-1))


def adaptive_weight(lambda_base, num_old, num_seen):
  """``lambda_base * sqrt(num_old / num_new)``."""
  return lambda_base * jnp.sqrt(num_old / (num_seen - num_old))


def margin_ranking(cosines, labels, num_old, num_seen, margin, top_k):
  """Mean over rows of ``sum_k max(0, margin - cos_gt + cos_k)``, ``cos_k``
  the ``top_k`` highest cosines among the new classes (``num_old`` to
  ``num_seen``): each old-class row's ground-truth score must beat its
  hardest new classes by ``margin``. ``cosines`` are the head's unscaled
  scores ``[rows, classes]``; every row must be an old class's (memory
  rows). With fewer than ``top_k`` new classes the missing ones add 0."""
  position = jnp.arange(cosines.shape[-1])
  new = (position >= num_old) & (position < num_seen)
  # Below any cosine minus any margin: an absent negative adds nothing.
  hard = jax.lax.top_k(jnp.where(new, cosines, -1e9), top_k)[0]
  truth = jnp.take_along_axis(cosines, labels[:, None], axis=-1)
  return jnp.mean(jnp.sum(jnp.maximum(0.0, margin - truth + hard), axis=-1))
