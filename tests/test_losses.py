"""Loss functions against numbers computed by hand with ``math``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cil_jax import losses


def _log_softmax(row):
  """Plain-python log-softmax of a list of floats."""
  log_z = math.log(sum(math.exp(v) for v in row))
  return [v - log_z for v in row]


def _softmax(row):
  return [math.exp(v) for v in _log_softmax(row)]


# ---------------------------------------------------------------- cross-entropy


def test_cross_entropy_single_row_by_hand():
  # -log softmax([1, 2, 0.5])[1] = log(e^1 + e^2 + e^0.5) - 2
  expected = math.log(math.e + math.e**2 + math.exp(0.5)) - 2.0
  value = losses.cross_entropy(jnp.array([[1.0, 2.0, 0.5]]), jnp.array([1]))
  assert float(value) == pytest.approx(expected, rel=1e-6)
  assert expected == pytest.approx(0.4644, abs=1e-4)


def test_cross_entropy_is_mean_over_rows():
  logits = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
  labels = [0, 2]
  nll0 = math.log(math.e + math.e**2 + math.exp(0.5)) - 1.0
  nll1 = math.log(1.0 + math.exp(-1.0) + math.exp(3.0)) - 3.0
  value = losses.cross_entropy(jnp.array(logits), jnp.array(labels))
  assert float(value) == pytest.approx((nll0 + nll1) / 2, rel=1e-6)


def test_cross_entropy_weights_mask_rows():
  logits = jnp.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [5.0, 0.0, 0.0]])
  labels = jnp.array([0, 2, 1])
  nll0 = math.log(math.e + math.e**2 + math.exp(0.5)) - 1.0
  nll2 = math.log(math.exp(5.0) + 2.0) - 0.0
  # Row 1 masked out: the mean is over the two remaining rows only.
  value = losses.cross_entropy(logits, labels, jnp.array([1.0, 0.0, 1.0]))
  assert float(value) == pytest.approx((nll0 + nll2) / 2, rel=1e-6)
  # A single kept row gives exactly that row's loss.
  only_first = losses.cross_entropy(logits, labels, jnp.array([1.0, 0.0, 0.0]))
  assert float(only_first) == pytest.approx(nll0, rel=1e-6)
  # All rows masked: zero, not NaN (denominator is clamped to 1).
  none = losses.cross_entropy(logits, labels, jnp.zeros(3))
  assert float(none) == 0.0


def test_cross_entropy_gradient_is_softmax_minus_onehot():
  # d CE / d logits = softmax(logits) - onehot(label), for a single row.
  row = [1.0, 2.0, 0.5]
  probs = _softmax(row)
  expected = [probs[0], probs[1] - 1.0, probs[2]]
  grad = jax.grad(lambda z: losses.cross_entropy(z, jnp.array([1])))(
      jnp.array([row]))
  np.testing.assert_allclose(np.asarray(grad)[0], expected, rtol=1e-5)


# ------------------------------------------------------------ distillation


TEACHER = [1.0, 2.0, 0.5]
STUDENT_OLD = [0.5, 1.0, 2.0]
STUDENT_NEW = [3.0, -1.0]


def _kd_by_hand(teacher, student_scored, student_all, temperature):
  """-sum_i p_T(i) log q(i) where q is a softmax over ``student_all`` and
  only the first len(teacher) entries are scored."""
  p = _softmax([v / temperature for v in teacher])
  log_q = _log_softmax([v / temperature for v in student_all])
  assert len(student_scored) == len(teacher)
  return -sum(pi * lq for pi, lq in zip(p, log_q[:len(teacher)]))


def test_kd_renormalized_by_hand_with_t2_scaling():
  t = 2.0
  # Teacher softmax at T=2 over [0.5, 1.0, 0.25]; student over [0.25, 0.5, 1].
  base = _kd_by_hand(TEACHER, STUDENT_OLD, STUDENT_OLD, t)
  value = losses.kd_renormalized(jnp.array([TEACHER]),
                                 jnp.array([STUDENT_OLD]), t, t2_scaling=True)
  assert float(value) == pytest.approx(4.0 * base, rel=1e-6)


def test_kd_renormalized_without_t2_scaling():
  t = 2.0
  base = _kd_by_hand(TEACHER, STUDENT_OLD, STUDENT_OLD, t)
  value = losses.kd_renormalized(jnp.array([TEACHER]),
                                 jnp.array([STUDENT_OLD]), t, t2_scaling=False)
  assert float(value) == pytest.approx(base, rel=1e-6)
  # p = softmax([0.5, 1, 0.25]) = [0.2918, 0.4810, 0.2272];
  # log q = [0.25, 0.5, 1] - log(e^0.25 + e^0.5 + e^1) = [-1.4818, -1.2318,
  # -0.7318]; -sum p log q = 0.4324 + 0.5925 + 0.1663 = 1.1912.
  assert base == pytest.approx(1.1912, abs=1e-4)


def test_kd_renormalized_temperature_one_is_cross_entropy_of_soft_targets():
  # T = 1: T^2 scaling is a no-op, and the loss is -sum p log q at T = 1.
  p = _softmax(TEACHER)
  log_q = _log_softmax(STUDENT_OLD)
  expected = -sum(a * b for a, b in zip(p, log_q))
  for scaling in (True, False):
    value = losses.kd_renormalized(jnp.array([TEACHER]),
                                   jnp.array([STUDENT_OLD]), 1.0, scaling)
    assert float(value) == pytest.approx(expected, rel=1e-6)


def test_kd_full_by_hand():
  t = 2.0
  student = STUDENT_OLD + STUDENT_NEW
  base = _kd_by_hand(TEACHER, STUDENT_OLD, student, t)
  value = losses.kd_full(jnp.array([TEACHER]), jnp.array([student]), t,
                         t2_scaling=True)
  assert float(value) == pytest.approx(4.0 * base, rel=1e-6)
  value = losses.kd_full(jnp.array([TEACHER]), jnp.array([student]), t,
                         t2_scaling=False)
  assert float(value) == pytest.approx(base, rel=1e-6)


def test_kd_full_exceeds_renormalized_when_student_puts_mass_on_new_classes():
  t = 2.0
  student = STUDENT_OLD + STUDENT_NEW
  renorm = losses.kd_renormalized(jnp.array([TEACHER]),
                                  jnp.array([STUDENT_OLD]), t, False)
  full = losses.kd_full(jnp.array([TEACHER]), jnp.array([student]), t, False)
  # Full log-probs = renormalised log-probs + log(mass on old classes), and
  # teacher probs sum to 1, so full - renorm = -log(P_student(old)).
  scaled = [v / t for v in student]
  old_mass = (sum(math.exp(v) for v in scaled[:3])
              / sum(math.exp(v) for v in scaled))
  assert float(full) - float(renorm) == pytest.approx(-math.log(old_mass),
                                                      rel=1e-5)
  assert float(full) > float(renorm) + 0.5


def test_both_kd_forms_are_minimised_at_the_teacher():
  t = 2.0
  p = _softmax([v / t for v in TEACHER])
  entropy = -sum(pi * math.log(pi) for pi in p)
  teacher = jnp.array([TEACHER])
  renorm = losses.kd_renormalized(teacher, teacher, t, t2_scaling=False)
  student = jnp.array([TEACHER + [-1e9, -1e9]])
  full = losses.kd_full(teacher, student, t, t2_scaling=False)
  assert float(renorm) == pytest.approx(entropy, rel=1e-6)
  assert float(full) == pytest.approx(entropy, rel=1e-6)
  # Same with T^2 scaling: T^2 * H(p_T).
  full_scaled = losses.kd_full(teacher, student, t, t2_scaling=True)
  assert float(full_scaled) == pytest.approx(4.0 * entropy, rel=1e-6)
  # Any other student scores higher (Gibbs' inequality).
  other = losses.kd_full(teacher, jnp.array([STUDENT_OLD + [-1e9, -1e9]]), t,
                         t2_scaling=False)
  assert float(other) > entropy + 1e-3
  # A student with the teacher's old logits but mass on new classes is not
  # minimal for kd_full, yet is for kd_renormalized.
  leaky = jnp.array([TEACHER + [2.0, 2.0]])
  assert float(losses.kd_full(teacher, leaky, t, False)) > entropy + 1e-3
  assert float(losses.distillation("renormalized", teacher, leaky, t,
                                   False)) == pytest.approx(entropy, rel=1e-6)


def test_kd_weights_mask_rows():
  t = 2.0
  teacher = jnp.array([TEACHER, [0.0, 0.0, 0.0]])
  student = jnp.array([STUDENT_OLD, [9.0, -9.0, 0.0]])
  base = _kd_by_hand(TEACHER, STUDENT_OLD, STUDENT_OLD, t)
  value = losses.kd_renormalized(teacher, student, t, t2_scaling=False,
                                 weights=jnp.array([1.0, 0.0]))
  assert float(value) == pytest.approx(base, rel=1e-6)


def test_distillation_dispatches_on_form():
  t = 2.0
  student = STUDENT_OLD + STUDENT_NEW
  renorm_by_hand = _kd_by_hand(TEACHER, STUDENT_OLD, STUDENT_OLD, t)
  full_by_hand = _kd_by_hand(TEACHER, STUDENT_OLD, student, t)
  teacher = jnp.array([TEACHER])
  # "renormalized" slices the first num_old columns of the full student.
  renorm = losses.distillation("renormalized", teacher, jnp.array([student]),
                               t, t2_scaling=False)
  full = losses.distillation("full", teacher, jnp.array([student]), t,
                             t2_scaling=False)
  assert float(renorm) == pytest.approx(renorm_by_hand, rel=1e-6)
  assert float(full) == pytest.approx(full_by_hand, rel=1e-6)
  scaled = losses.distillation("full", teacher, jnp.array([student]), t)
  assert float(scaled) == pytest.approx(4.0 * full_by_hand, rel=1e-6)


def test_distillation_unknown_form_raises():
  with pytest.raises(ValueError, match="Unknown KD form 'hinton'"):
    losses.distillation("hinton", jnp.array([TEACHER]),
                        jnp.array([STUDENT_OLD]), 2.0)


# ------------------------------------------------------- masking, local CE


def test_local_cross_entropy_by_hand():
  # Outputs [1, 3) of [1, 2, 0.5, 3] kept: -log softmax([2, 0.5])[1].
  expected = math.log(math.e**2 + math.exp(0.5)) - 0.5
  assert expected == pytest.approx(1.7014, abs=1e-4)
  logits = jnp.array([[1.0, 2.0, 0.5, 3.0]])
  masked = losses.mask_logits(logits, 3, first_valid=1)
  np.testing.assert_array_equal(masked, [[losses.MASKED_LOGIT, 2.0, 0.5,
                                          losses.MASKED_LOGIT]])
  assert float(losses.cross_entropy(masked, jnp.array([2]))) == (
      pytest.approx(expected, rel=1e-6))
  # Only the kept outputs get a gradient: softmax([2, 0.5]) - onehot.
  grad = jax.grad(lambda z: losses.cross_entropy(
      losses.mask_logits(z, 3, 1), jnp.array([2])))(logits)
  p1 = math.e**2 / (math.e**2 + math.exp(0.5))
  np.testing.assert_allclose(grad, [[0.0, p1, (1.0 - p1) - 1.0, 0.0]],
                             atol=1e-6)
  # A traced lower bound, and 0 (the default) masks only from num_valid on.
  jitted = jax.jit(losses.mask_logits)(logits, 3, 1)
  np.testing.assert_array_equal(jitted, masked)
  np.testing.assert_array_equal(losses.mask_logits(logits, 3)[0, :3],
                                [1.0, 2.0, 0.5])


# -------------------------------------------------------------- eps mixing


def test_eps_mix():
  assert losses.eps_mix(2.0, 4.0, 0.25) == pytest.approx(0.75 * 2 + 0.25 * 4)
  assert losses.eps_mix(2.0, 4.0, 0.0) == pytest.approx(2.0)
  assert losses.eps_mix(2.0, 4.0, 1.0) == pytest.approx(4.0)
  mixed = losses.eps_mix(jnp.float32(3.0), jnp.float32(1.0), 0.5)
  assert float(mixed) == pytest.approx(2.0)


def test_auto_eps_is_share_of_old_classes():
  assert losses.auto_eps(5, 5) == pytest.approx(0.5)
  assert losses.auto_eps(3, 1) == pytest.approx(0.75)
  assert losses.auto_eps(9, 1) == pytest.approx(0.9)
  assert losses.auto_eps(2, 8) == pytest.approx(0.2)
  assert losses.auto_eps(0, 4) == 0.0


@pytest.mark.parametrize("num_old,num_new", [(5, 0), (0, 0), (-1, 3), (3, -2)])
def test_auto_eps_rejects_bad_counts(num_old, num_new):
  with pytest.raises(ValueError, match="num_new > 0"):
    losses.auto_eps(num_old, num_new)
