"""Rebalancing the head after a class step.

Trained on new classes only, a head's new columns grow longer than its old
ones, so new classes win the argmax on old-class inputs. Weight aligning
(Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental
Learning", CVPR 2020) scales the new columns so their mean L2 norm equals
the old columns' mean norm, without old data. BiC's bias correction
(``cil_jax.methods.bic``, fitted on held-out old and new data) maps the
new logits to ``alpha * z + beta``, folded into the same columns.
"""

import numpy as np
from flax import traverse_util


def align_weights(head, num_old, num_seen):
  """``head`` (``{"kernel": [features, classes], "bias": [classes]}``) with
  columns ``num_old`` to ``num_seen`` scaled by gamma = mean old column norm
  / mean new column norm.

  The bias of a new class is scaled by the same gamma: the paper's FC layer
  scores a class by its weight vector alone, and scaling weight and bias
  together scales each new class's logit by gamma, so the correction stays
  one factor on the new logits whatever the bias learnt. Old columns and
  the unseen ones from ``num_seen`` on are returned bit-identical. Host
  arrays in, ``(head, gamma)`` out.
  """
  kernel = np.asarray(head["kernel"])
  bias = np.asarray(head["bias"])
  if not 0 < num_old < num_seen <= kernel.shape[-1]:
    raise ValueError(f"Weight aligning needs 0 < num_old < num_seen <= "
                     f"{kernel.shape[-1]} head columns, got num_old="
                     f"{num_old}, num_seen={num_seen}.")
  norms = np.linalg.norm(kernel[:, :num_seen].astype(np.float64), axis=0)
  gamma = norms[:num_old].mean() / norms[num_old:].mean()
  new = slice(num_old, num_seen)
  kernel, bias = kernel.copy(), bias.copy()
  kernel[:, new] = (kernel[:, new] * gamma).astype(kernel.dtype)
  bias[new] = (bias[new] * gamma).astype(bias.dtype)
  return {**head, "kernel": kernel, "bias": bias}, float(gamma)


def correct_bias(head, alpha, beta, num_old, num_seen):
  """``head`` whose logits of columns ``num_old`` to ``num_seen`` are
  ``alpha * z + beta``: those kernel columns times alpha, their bias
  ``alpha * b + beta``; every other column bit-identical."""
  kernel, bias = np.array(head["kernel"]), np.array(head["bias"])
  new = slice(num_old, num_seen)
  kernel[:, new] = (kernel[:, new] * alpha).astype(kernel.dtype)
  bias[new] = (bias[new] * alpha + beta).astype(bias.dtype)
  return {**head, "kernel": kernel, "bias": bias}


def align_variables(variables, num_old, num_seen, head_path="head"):
  """``(variables with the head's new columns weight-aligned, gamma)``;
  ``head_path`` is the head's slash path inside params."""
  out = {}

  def align(head):
    head, out["gamma"] = align_weights(head, num_old, num_seen)
    return head
  variables = map_head(variables, head_path, align,
                       "config.eps_kd.weight_aligning=False")
  return variables, out["gamma"]


def map_head(variables, head_path, fn, fix):
  """``variables`` with the head (``{"kernel", "bias"}`` at the slash path
  ``head_path`` inside params) replaced by ``fn(head)``; ``fix`` names the
  setting to change for a head without bias."""
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  if f"{head_path}/bias" not in flat:
    raise ValueError(f"Rebalancing changes the head's kernel and bias, but "
                     f"the head at {head_path!r} has no bias; set {fix}.")
  head = fn({"kernel": flat[f"{head_path}/kernel"],
             "bias": flat[f"{head_path}/bias"]})
  flat.update({f"{head_path}/{k}": v for k, v in head.items()})
  return {**variables, "params": traverse_util.unflatten_dict(
      flat, sep="/")}
