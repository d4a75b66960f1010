"""lucir: LUCIR (Hou et al. CVPR 2019, "Learning a Unified Classifier
Incrementally via Rebalancing"; STORES OLD DATA).

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
from jax import lax
from ml_collections import config_dict

from cil_jax import features as feature_lib
from cil_jax import losses
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import rows
from cil_jax.models.layers import cosine
from cil_jax.models.layers import l2_normalize


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


def _normalize(features):
  """``l2_normalize`` in float32 (features may be bfloat16)."""
  return l2_normalize(jnp.asarray(features, jnp.float32))


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


def defaults():
  # CE on new data and memory rows + lambda_base * sqrt(old / new classes)
  # * (1 - cos(new, old features)) + mr_weight * the margin ranking loss
  # (each memory row's true-class cosine above its top_k new-class ones by
  # margin). Needs model.cosine_head=True.
  c = config_dict.ConfigDict()
  c.lambda_base = 5.0
  c.margin = 0.5
  c.top_k = 2
  c.mr_weight = 1.0
  return c


def check(config, need, names, num_devices):
  rows.check(config, need, names, num_devices)
  need(config.model.get("cosine_head", False) or "lucir" not in names,
       "config.methods lists lucir, whose classifier is a cosine-normalised "
       "head, but config.model.cosine_head=False; set "
       "--config.model.cosine_head=True (every method of the run, C_A "
       "included, then uses that head; run lucir apart to compare with "
       "linear-head methods).")
  c = config.lucir
  need(isinstance(c.top_k, int) and c.top_k >= 1,
       f"config.lucir.top_k={c.top_k!r} must be an int >= 1: the hard "
       f"new-class negatives per memory row; use e.g. 2.")
  for key in ("lambda_base", "margin", "mr_weight"):
    need(c[key] >= 0, f"config.lucir.{key}={c[key]} must be >= 0.")


def from_config(spec, config):
  return rows.from_config(spec, config, settings=settings_from(config.lucir))


def objective(method, build):
  """CE over the seen classes on the batch and the memory rows, plus the
  less-forget constraint against the teacher's features on both and the
  margin ranking loss on the memory rows; its teacher is always run (its
  features, not its logits); the ``kd`` metric is the less-forget term."""
  lucir = method.settings

  def loss(inputs, params):
    batch, hparams = inputs.batch, inputs.hparams
    count = batch["image"].shape[0]
    images = jnp.concatenate([batch["image"], batch["replay_image"]])
    all_logits, updates = inputs.student(
        params, images, mutable=("batch_stats", "intermediates"),
        capture_intermediates=feature_lib.capture_features)
    features = feature_lib.captured_features(updates)
    old_features = lax.stop_gradient(
        feature_lib.features(inputs.teacher_apply, inputs.teacher, images))
    labels = jnp.concatenate([batch["label"], batch["replay_label"]])
    seen_logits = losses.mask_logits(all_logits, hparams["num_seen"])
    ce = losses.cross_entropy(seen_logits, labels)
    forget = less_forget(features, old_features)
    ranking = margin_ranking(
        cosine(features[count:], params[build.head_path]["kernel"]),
        batch["replay_label"], hparams["num_old"], hparams["num_seen"],
        lucir.margin, lucir.top_k)
    total = (ce + adaptive_weight(
        lucir.lambda_base, hparams["num_old"], hparams["num_seen"])
             * forget + lucir.mr_weight * ranking)
    return total, (seen_logits[:count], updates.get("batch_stats", {}), ce,
                   forget)
  return spec_lib.Objective(loss, teacher_logits=False,
                            metric_names=("ce", "less_forget"))


def structure(method):
  return method.settings


METHOD = spec_lib.Spec(
    name="lucir", index=13, family="stores examples",
    summary="cosine head, less-forget constraint, margin ranking on memory",
    from_config=from_config, objective=objective, teacher=True,
    sections={**rows.SECTIONS, "lucir": defaults}, check=check,
    check_steps=rows.check_steps, structure=structure,
    rows=rows.make_rows())
