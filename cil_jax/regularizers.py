"""The pure parts of the regularisation methods: EWC, SI and MAS.

Each keeps the previous model's parameters (the *anchor* theta*) and an
*importance* Omega per parameter, and adds to the step's loss the penalty

    sum_i Omega_i * (theta_i - theta*_i)^2

(the method's weight is folded into Omega when the step's input is made, so
the step needs no weight of its own; EWC's paper writes lambda/2, so our
``ewc.weight`` is its lambda/2). The importance of the model after a step:

- ``ewc``: the diagonal Fisher information, the mean over the step's
  training examples of the squared gradient of the log-likelihood of the
  model's own prediction (Kirkpatrick et al. 2017; the predicted label as in
  van de Ven & Tolias 2019);
- ``mas``: the mean over the step's training examples of the absolute
  gradient of the squared L2 norm of the output (the logits of the seen
  classes; Aljundi et al. 2018);
- ``si``: the path integral accumulated during the step's training,
  omega_i = -sum_k g_i(k) * delta theta_i(k) (g the gradient of the task
  loss, without the penalty: the paper's path integral of the task loss),
  divided by (theta_end - theta_start)^2 + damping (Zenke et al. 2017).

Over a sequence the importances add up (``combine``); online EWC decays
the old one by gamma. Parameters of classes not seen yet have zero
gradient and never move, so their importance is zero: new head columns
get no penalty.
"""

import jax
import jax.numpy as jnp
import optax

from cil_jax import losses

REGULARIZERS = ("ewc", "si", "mas")


def penalty(params, anchor, importance):
  """sum Omega * (theta - theta*)^2 over every parameter."""
  return sum(jax.tree.leaves(jax.tree.map(
      lambda p, a, w: jnp.sum(w * jnp.square(p - a)),
      params, anchor, importance)))


def path_integral_step(path_integral, task_grads, old_params, new_params):
  """SI's running sum after one update: omega - g * (theta_new - theta_old)."""
  return jax.tree.map(lambda w, g, old, new: w - g * (new - old),
                      path_integral, task_grads, old_params, new_params)


def si_importance(path_integral, start_params, end_params, damping):
  """omega / ((theta_end - theta_start)^2 + damping)."""
  return jax.tree.map(lambda w, s, e: w / (jnp.square(e - s) + damping),
                      path_integral, start_params, end_params)


def fisher_output(logits, num_seen):
  """Per example: the log-likelihood of the model's own prediction among
  the seen classes (its squared gradient, averaged, is the diagonal
  Fisher)."""
  logits = losses.mask_logits(logits, num_seen)
  predicted = jax.lax.stop_gradient(jnp.argmax(logits, axis=-1))
  return -optax.softmax_cross_entropy_with_integer_labels(logits, predicted)


def mas_output(logits, num_seen):
  """Per example: the squared L2 norm of the seen classes' logits."""
  seen = jnp.arange(logits.shape[-1]) < num_seen
  return jnp.sum(jnp.where(seen, logits, 0.0) ** 2, axis=-1)


# kind -> (scalar of one example's logits, map of its gradient)
_EXAMPLE = {
    "ewc": (fisher_output, jnp.square),
    "mas": (mas_output, jnp.abs),
}


def importance_sum(kind, apply_fn, variables, images, mask, num_seen):
  """Sum over the examples where ``mask`` of the per-example importance of
  ``kind`` (``ewc`` or ``mas``): per-example gradients (``jax.vmap`` of
  ``jax.grad``) of the example's scalar, squared (Fisher) or absolute (MAS).
  ``apply_fn`` runs in inference mode; logits past ``num_seen`` are masked
  and get no gradient."""
  scalar, transform = _EXAMPLE[kind]
  rest = {k: v for k, v in variables.items() if k != "params"}

  def one(params, image):
    logits = apply_fn({"params": params, **rest}, image[None], train=False)
    return scalar(logits[0], num_seen)

  grads = jax.vmap(jax.grad(one), in_axes=(None, 0))(variables["params"],
                                                     images)
  weights = mask.astype(jnp.float32)
  return jax.tree.map(
      lambda g: jnp.tensordot(weights, transform(g), axes=1), grads)


def combine(previous, importance, params, decay=1.0, merge_anchors=False):
  """The ``{"anchor", "importance"}`` after a step: ``importance`` (of the
  model ``params``) added to ``decay`` times the previous one (``None``
  after the first step). The anchor is ``params``, except with
  ``merge_anchors`` (EWC with a penalty per earlier step): sum_k F_k
  (theta - theta_k)^2 equals (sum_k F_k) (theta - theta*)^2 plus a
  constant, theta* the F-weighted mean of the theta_k, so one anchor and
  one importance carry every earlier step's penalty exactly."""
  if previous is None:
    return {"anchor": params, "importance": importance}
  total = jax.tree.map(lambda old, new: decay * old + new,
                       previous["importance"], importance)
  anchor = params
  if merge_anchors:
    def merged(f_old, a_old, f_new, p, f):
      # Below the smallest normal float, XLA's CPU flushes to zero: a
      # denormal sum would divide by zero. Such a weight holds nothing.
      weighty = f >= jnp.finfo(f.dtype).tiny
      return jnp.where(weighty, (f_old * a_old + f_new * p)
                       / jnp.where(weighty, f, 1.0), p)
    anchor = jax.tree.map(merged, previous["importance"], previous["anchor"],
                          importance, params, total)
  return {"anchor": anchor, "importance": total}


def weighted(state, weight):
  """The step's input: the anchor and ``weight`` times the importance."""
  return {"anchor": state["anchor"],
          "importance": jax.tree.map(lambda w: weight * w,
                                     state["importance"])}
