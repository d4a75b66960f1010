"""Which parameters learn: regex rules over parameter paths.

A path is the slash-joined key path inside ``params``, e.g.
``backbone/layer_01/kernel``, ``adapter/up/bias``, ``head/kernel``. Rules are
``(regex, label)`` pairs, first full match wins, and every parameter must be
covered (big_vision's ``_split_frozen`` idea). Presets turn a name into rules.
"""

import re

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from cil_jax.models.layers import SCALE

TRAINABLE = "trainable"
FROZEN = "frozen"
PRESETS = ("all", "head", "new_rows", "last_k", "adapter", "regex")


def layer_names(params):
  """Top-level layers in forward order: backbone layers, adapter, head.

  Backbone layers are named ``layer_<index>``; the index gives the order.
  """
  backbone = sorted(params.get("backbone", {}),
                    key=lambda name: int(name.rsplit("_", 1)[-1]))
  names = [f"backbone/{name}" for name in backbone]
  if "adapter" in params:
    names.append("adapter")
  return names + ["head"]


def preset_rules(preset, params, last_k=1, trainable_regex="", layout=None):
  """Rules for a named preset; the last rule freezes everything else.

  ``layout`` is ``(head_path, layers in forward order)`` of a foreign
  module (``models.foreign``); ``None``: cil_jax's own models."""
  head = re.escape(layout[0]) if layout else "head"
  if preset == "all":
    pattern = ".*"
  elif preset in ("head", "new_rows"):
    pattern = f"{head}/.*"
  elif preset == "adapter":
    if layout is not None:
      raise ValueError("Preset 'adapter' inserts cil_jax's adapter, which "
                       "needs a cil_jax model; with config.teacher.module "
                       "use 'head', 'new_rows', 'last_k', 'all' or 'regex'.")
    if "adapter" not in params:
      raise ValueError("Preset 'adapter' needs a model with an adapter; set "
                       "the method's adapter_dim > 0.")
    pattern = "(adapter|head)/.*"
  elif preset == "last_k":
    layers = list(layout[1]) if layout else layer_names(params)
    if not 1 <= last_k <= len(layers):
      raise ValueError(f"last_k={last_k} is out of range: this model has "
                       f"{len(layers)} layers ({', '.join(layers)}); choose "
                       f"1..{len(layers)}.")
    pattern = "(" + "|".join(re.escape(n) for n in layers[-last_k:]) + ")/.*"
  elif preset == "regex":
    if not trainable_regex:
      raise ValueError("Preset 'regex' needs trainable_regex, a regex over "
                       "parameter paths such as 'head/.*'.")
    pattern = trainable_regex
  else:
    raise ValueError(f"Unknown layer preset {preset!r}; use one of {PRESETS}.")
  return [(pattern, TRAINABLE), (".*", FROZEN)]


def frozen_backbone_layers(params, labels):
  """Names of backbone layers all of whose parameters ``labels`` (a label
  tree of ``params``, from ``trainable_labels``) freeze."""
  backbone_labels = labels.get("backbone", {})
  return tuple(name for name in params.get("backbone", {})
               if all(label == FROZEN for label in
                      jax.tree_util.tree_leaves(backbone_labels[name])))


def rule_labeler(rules, default=FROZEN):
  """A function slash-path -> label for ``rules`` (first full match wins);
  a path no rule matches gets ``default`` (``None``: raise)."""
  compiled = [(re.compile(pattern), label) for pattern, label in rules]

  def label_of(path):
    for rx, label in compiled:
      if rx.fullmatch(path):
        return label
    if default is None:
      raise ValueError(f"Parameter {path!r} matches no partition rule "
                       f"{[p for p, _ in rules]}; add a rule that covers it.")
    return default
  return label_of


def path_labels(tree, rules):
  """Label tree for ``tree`` from ``rules``; raises on an uncovered path."""
  label_of = rule_labeler(rules, default=None)
  flat = traverse_util.flatten_dict(tree, sep="/")
  return traverse_util.unflatten_dict(
      {path: label_of(path) for path in flat}, sep="/")


def trainable_labels(params, rules):
  """Like ``path_labels`` but also refuses a rule set that trains nothing."""
  labels = path_labels(params, rules)
  if TRAINABLE not in jax.tree_util.tree_leaves(labels):
    raise ValueError(f"The trainable pattern {rules[0][0]!r} matches no "
                     f"parameter; paths look like "
                     f"{list(traverse_util.flatten_dict(params, sep='/'))[:4]}.")
  return labels


def masked_optimizer(tx, labels):
  """``tx`` on trainable leaves, zero updates on frozen ones."""
  return optax.transforms.partition(
      {TRAINABLE: tx, FROZEN: optax.set_to_zero()}, labels)


def keep_head_columns(updates, first, end, head_path="head"):
  """``updates`` with the head's columns outside ``[first, end)`` zeroed.

  The head is allocated for the whole class sequence: columns from ``end``
  (classes not seen yet) never move, and preset ``new_rows`` passes
  ``first = num_old`` so the old classes' columns do not either. Acting on
  the final updates, momentum or weight decay cannot leak into them.
  ``first`` and ``end`` may be traced. ``head_path`` is the head's slash
  path inside params (a foreign module's, e.g. ``classifier/logits``).
  The cosine head's scale, one number for all classes, is not masked.
  """
  def mask(path, update):
    if ("/".join(_key(k) for k in path[:-1]) != head_path
        or _key(path[-1]) == SCALE):
      return update
    column = jnp.arange(update.shape[-1])
    keep = (column >= first) & (column < end)
    return jnp.where(keep, update, jnp.zeros_like(update))
  return jax.tree_util.tree_map_with_path(mask, updates)


def keep_frozen(new_tree, old_tree, labels_by_layer):
  """Takes ``old_tree`` leaves where the owning layer is frozen.

  Used for BatchNorm statistics: a frozen layer keeps its running averages.
  ``labels_by_layer`` is a function from a slash path to a label.
  """
  def pick(path, new, old):
    slash_path = "/".join(_key(k) for k in path)
    return old if labels_by_layer(slash_path) == FROZEN else new
  return jax.tree_util.tree_map_with_path(pick, new_tree, old_tree)


def _key(entry):
  return str(getattr(entry, "key", entry))
