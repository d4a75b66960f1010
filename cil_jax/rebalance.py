"""Rebalancing the head after a class step, without old data.

Trained on new classes only, a head's new columns grow longer than its old
ones, so new classes win the argmax on old-class inputs. Weight aligning
(Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental
Learning", CVPR 2020) scales the new columns so their mean L2 norm equals
the old columns' mean norm.
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


def align_variables(variables, num_old, num_seen, head_path="head"):
  """``(variables with the head's new columns weight-aligned, gamma)``;
  ``head_path`` is the head's slash path inside params."""
  flat = traverse_util.flatten_dict(variables["params"], sep="/")
  if f"{head_path}/bias" not in flat:
    raise ValueError(f"Weight aligning scales the head's kernel and bias, but "
                     f"the head at {head_path!r} has no bias; set "
                     f"config.eps_kd.weight_aligning=False.")
  head = {"kernel": flat[f"{head_path}/kernel"],
          "bias": flat[f"{head_path}/bias"]}
  head, gamma = align_weights(head, num_old, num_seen)
  flat.update({f"{head_path}/{k}": v for k, v in head.items()})
  return {**variables, "params": traverse_util.unflatten_dict(
      flat, sep="/")}, gamma
