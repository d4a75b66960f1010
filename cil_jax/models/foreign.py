"""Any Flax linen module as a cil_jax classifier, under its own names.

The contract (docs/checkpoint.md): the module is importable as
``pkg.mod:Name``, built with JSON keyword arguments, called as
``module.apply(variables, images, **{train_kwarg: train})`` (``!name``:
``name=not train``, e.g. ``!deterministic``; empty: no keyword) on a batch of
images of the dataset's shape, and returns the logits of its final
``nn.Dense`` (the *head*, at a slash path inside ``params`` such as
``classifier/logits``) unchanged. Its variables are ``params`` and
optionally ``batch_stats``.

Widening needs no change to the module: while it runs, a flax method
interceptor replaces the call of the head Dense by the same Dense with
more ``features``, bound to the same scope, so the wider kernel and bias
live at the head's own path (``FlaxClassifier``).
"""

import functools
import importlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp


class ForeignModelError(ValueError):
  """A Flax module or its checkpoint does not fit the contract."""


def import_module(import_path, kwargs_json, where="config.teacher.module"):
  """The module ``pkg.mod:Name`` built with ``kwargs_json`` (a JSON object,
  a dict, or empty)."""
  if not isinstance(import_path, str) or ":" not in import_path:
    raise ForeignModelError(
        f"{where}={import_path!r} is not an import path; give it as "
        f"'package.module:ClassName', e.g. 'my_pkg.models:Net'.")
  module_name, _, attr = import_path.partition(":")
  try:
    target = importlib.import_module(module_name)
    for part in attr.split("."):
      target = getattr(target, part)
  except (ImportError, AttributeError) as e:
    raise ForeignModelError(
        f"{where}={import_path!r} cannot be imported ({type(e).__name__}: "
        f"{e}); put its package on PYTHONPATH or correct the path.") from None
  if not (isinstance(target, type) and issubclass(target, nn.Module)):
    raise ForeignModelError(f"{where}={import_path!r} is {target!r}, not a "
                            f"flax.linen.Module class.")
  kwargs = kwargs_json
  if isinstance(kwargs_json, str):
    try:
      kwargs = json.loads(kwargs_json) if kwargs_json.strip() else {}
    except json.JSONDecodeError as e:
      raise ForeignModelError(
          f"{where}_kwargs={kwargs_json!r} is not JSON ({e}); give an "
          f"object, e.g. '{{\"width\": 64}}'.") from None
  if not isinstance(kwargs, dict):
    raise ForeignModelError(f"{where}_kwargs={kwargs_json!r} must be a JSON "
                            f"object of keyword arguments.")
  try:
    return target(**kwargs), kwargs
  except TypeError as e:
    raise ForeignModelError(f"{import_path} cannot be built with keyword "
                            f"arguments {kwargs}: {e}.") from None


def _widen(head_path, width):
  """An interceptor running the Dense at ``head_path`` with ``width``
  outputs."""
  head = tuple(head_path.split("/"))

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name == "__call__" and isinstance(module, nn.Dense)
        and module.path == head and module.features != width):
      return module.clone(parent=module.scope, features=width)(*args,
                                                               **kwargs)
    return next_fun(*args, **kwargs)
  return interceptor


class FlaxClassifier:
  """``module`` with its head widened to ``num_classes`` outputs, with the
  ``init``/``apply`` of a cil_jax model (``apply(..., train=bool)``)."""

  def __init__(self, module, head_path, num_classes, train_kwarg,
               layers=(), inference=False):
    self.module, self.head_path = module, head_path
    self.num_classes, self.train_kwarg = num_classes, train_kwarg
    self.layers = layers  # parameter-owning layers, in forward order
    # Trains in the module's inference mode (``in_inference_mode``).
    self.inference = inference

  def widened(self, num_classes):
    return FlaxClassifier(self.module, self.head_path, num_classes,
                          self.train_kwarg, self.layers, self.inference)

  def in_inference_mode(self):
    """This classifier, run in the module's inference mode even when
    trained: its BatchNorm layers normalise by their running statistics
    (the teacher's, never updated from new-class batches) and dropout is
    off, as cil_jax's own models run their frozen layers. A module's one
    train keyword switches both, so they go together."""
    return FlaxClassifier(self.module, self.head_path, self.num_classes,
                          self.train_kwarg, self.layers, inference=True)

  def _mode(self, train):
    return mode_kwargs(self.train_kwarg, train and not self.inference)

  def init(self, rng, inputs):
    with nn.intercept_methods(_widen(self.head_path, self.num_classes)):
      return self.module.init(rng, inputs, **self._mode(False))

  def apply(self, variables, inputs, train=False, **kwargs):
    with nn.intercept_methods(_widen(self.head_path, self.num_classes)):
      return self.module.apply(variables, inputs, **self._mode(train),
                               **kwargs)


def mode_kwargs(train_kwarg, train):
  """The keyword telling the module training from inference: ``train_kwarg``
  gets ``train``; ``"!name"`` gets ``not train`` (e.g. ``!deterministic``);
  ``""``: none."""
  if not train_kwarg:
    return {}
  if train_kwarg.startswith("!"):
    return {train_kwarg[1:]: not train}
  return {train_kwarg: train}


def trace(module, input_shape, train_kwarg):
  """``(denses, call_order, output_width)`` of ``module`` on one input:
  ``{path: features}`` of every ``nn.Dense``, the slash paths of the
  modules in the order they were called, and the logits' width."""
  denses, order = {}, []

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__":
      path = "/".join(context.module.path)
      if path not in order:
        order.append(path)
      if isinstance(context.module, nn.Dense):
        denses[path] = context.module.features
    return next_fun(*args, **kwargs)

  mode = mode_kwargs(train_kwarg, False)
  try:
    with nn.intercept_methods(record):
      variables = jax.eval_shape(functools.partial(module.init, **mode),
                                 jax.random.PRNGKey(0),
                                 jnp.zeros((1, *input_shape), jnp.float32))
      out = jax.eval_shape(functools.partial(module.apply, **mode), variables,
                           jnp.zeros((1, *input_shape), jnp.float32))
  except Exception as e:  # pylint: disable=broad-except
    raise ForeignModelError(
        f"{type(module).__name__} cannot run on one input of shape "
        f"{list(input_shape)} with keywords {mode}"
        f" ({type(e).__name__}: {str(e)[:300]}); check the dataset's input "
        f"shape and config.teacher.train_kwarg.") from None
  if not (hasattr(out, "shape") and len(out.shape) == 2):
    raise ForeignModelError(
        f"{type(module).__name__} returns {out!r}, not logits of shape "
        f"[batch, classes]; cil_jax needs a module returning the logits.")
  return denses, order, out.shape[-1]


def find_head(denses, num_classes, head_path, where):
  """The head's path: ``head_path`` checked, or the one Dense with
  ``num_classes`` outputs; raises listing the candidates."""
  listing = ", ".join(f"{p!r} ({f} outputs)" for p, f in denses.items())
  if head_path:
    if head_path not in denses:
      raise ForeignModelError(
          f"{where}: head path {head_path!r} is not an nn.Dense of the "
          f"module; its Dense layers are {listing or 'none'}.")
    if denses[head_path] != num_classes:
      raise ForeignModelError(
          f"{where}: the Dense at {head_path!r} has {denses[head_path]} "
          f"outputs but the teacher has {num_classes} classes; give the "
          f"final Dense's path (Dense layers: {listing}).")
    return head_path
  candidates = [p for p, f in denses.items() if f == num_classes]
  if len(candidates) != 1:
    raise ForeignModelError(
        f"{where}: cannot tell the head: {len(candidates)} nn.Dense layers "
        f"have {num_classes} outputs ({candidates}); Dense layers: "
        f"{listing or 'none'}. Give its path with "
        f"--config.teacher.head_path=PATH (or the metadata's head_path).")
  return candidates[0]


def layer_order(params, call_order):
  """The parameter-owning layers of ``params`` (slash paths of the modules
  holding the leaves) in the order the module called them."""
  owners = set()
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    owners.add("/".join(str(getattr(k, "key", k)) for k in path[:-1]))
  ordered = [p for p in call_order if p in owners]
  return tuple(ordered + sorted(owners - set(ordered)))
