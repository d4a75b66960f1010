"""Pure loss functions of logits and labels.

Conventions: logits are ``[batch, classes]``; the old (teacher's) classes are
always the first ``num_old`` columns of the student's logits, because labels are
positions in the class order and the head only ever grows at the end.
"""

import jax
import jax.numpy as jnp
import optax

KD_FORMS = ("renormalized", "full")
# Cross-entropy of a class step's data over all seen classes, or over the
# new classes only ("local", R-DFCIL, Gao et al. 2022): then new data never
# pushes the old classes' logits down, and only distillation moves them.
CE_FORMS = ("all", "local")
# A logit this low gets softmax weight exactly 0 in float32, at any
# temperature used here, and stays finite, so 0 * log p is 0 (not NaN).
MASKED_LOGIT = -1e9


def mask_logits(logits, num_valid, first_valid=0):
  """``logits`` with outputs outside ``[first_valid, num_valid)`` set to
  ``MASKED_LOGIT``: softmax, cross-entropy and KD over the result equal
  those over those columns alone, and no gradient reaches the masked
  outputs. From ``num_valid`` on are the classes not yet seen;
  ``first_valid = num_old`` keeps only the new classes (local CE).
  Both may be traced."""
  position = jnp.arange(logits.shape[-1])
  valid = (position >= first_valid) & (position < num_valid)
  return jnp.where(valid, logits, MASKED_LOGIT)


def cross_entropy(logits, labels, weights=None):
  """Mean softmax cross-entropy of integer ``labels``; ``weights`` masks rows."""
  return _weighted_mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, labels),
      weights)


def kd_renormalized(teacher_logits, student_old_logits, temperature,
                    t2_scaling=True, weights=None):
  """LwF distillation (Li & Hoiem 2016).

  Both sides take a softmax over the old classes only, at ``temperature``;
  the loss is the cross-entropy of the student's from the teacher's
  distribution. ``t2_scaling`` multiplies by T^2 so gradient size does not
  shrink with T (Hinton et al. 2015).
  """
  teacher_probs = jax.nn.softmax(teacher_logits / temperature, axis=-1)
  student_log_probs = jax.nn.log_softmax(student_old_logits / temperature,
                                         axis=-1)
  per_example = -jnp.sum(teacher_probs * student_log_probs, axis=-1)
  if t2_scaling:
    per_example = per_example * temperature**2
  return _weighted_mean(per_example, weights)


def kd_full(teacher_logits, student_logits, temperature, t2_scaling=True,
            weights=None):
  """Distillation of Taitelbaum et al. (ICASSP 2019).

  The teacher's softmax over the old classes A weighs the student's
  log-probabilities of those classes taken from its *full* softmax over A∪B,
  so keeping the teacher's old-class beliefs also pushes mass off the new
  classes for old-looking inputs.
  """
  num_old = teacher_logits.shape[-1]
  teacher_probs = jax.nn.softmax(teacher_logits / temperature, axis=-1)
  student_log_probs = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  per_example = -jnp.sum(teacher_probs * student_log_probs[:, :num_old],
                         axis=-1)
  if t2_scaling:
    per_example = per_example * temperature**2
  return _weighted_mean(per_example, weights)


def distillation(form, teacher_logits, student_logits, temperature,
                 t2_scaling=True, weights=None, num_old=None):
  """Dispatches on ``form`` ("renormalized" or "full").

  The old classes are the teacher's outputs, or, for teacher and student
  heads of one width with unseen outputs masked (``mask_logits``), the first
  ``num_old`` (which may be traced).
  """
  width = teacher_logits.shape[-1]
  student_old = student_logits[:, :width]
  if num_old is not None:
    student_old = mask_logits(student_old, num_old)
  if form == "renormalized":
    return kd_renormalized(teacher_logits, student_old, temperature,
                           t2_scaling, weights)
  if form == "full":
    return kd_full(teacher_logits, student_logits, temperature, t2_scaling,
                   weights)
  raise ValueError(f"Unknown KD form {form!r}; use one of {KD_FORMS}.")


def eps_mix(ce, kd, eps):
  """The objective of the paper: ``(1 - eps) * CE + eps * KD``."""
  return (1.0 - eps) * ce + eps * kd


def auto_eps(num_old, num_new):
  """eps linear in the share of original classes: ``k / (k + m)``.

  Taitelbaum et al. find the best eps grows linearly with the number of
  original classes; the share k/(k+m) is that line through (0, 0) and (1, 1):
  with no original class nothing is distilled, and with almost only original
  classes distillation dominates.
  """
  if num_old < 0 or num_new <= 0:
    raise ValueError(f"auto eps needs num_old >= 0 and num_new > 0, got "
                     f"num_old={num_old}, num_new={num_new}.")
  return num_old / (num_old + num_new)


def _weighted_mean(values, weights):
  if weights is None:
    return jnp.mean(values)
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)
