"""The exemplar memory in a run: selected after each step, kept in the step
directory, fed beside every batch of the next step.

After a step of a rehearsal method (and after C_A when a run has one), the
memory shrinks every old class to the new quota and adds the step's new
classes, selected (``config.memory.selection``) with the features of the
model the step trained: its penultimate layer (the head's input),
L2-normalised. It is written to ``memory.json`` in the step directory
before the classifier, so a resumed run reads it instead of selecting
again; the file records the settings it was selected with, and one that
does not match the config is refused. The memory stores rows of the
training split: these methods keep old data, unlike every other method
here.
"""

import functools
import os

import jax
import numpy as np

from cil_jax import features as feature_lib
from cil_jax import jsonio
from cil_jax.memory import selection as memory_lib
from cil_jax import timer
from cil_jax.data import arrays
from cil_jax.data import batches

MEMORY_FILE = "memory.json"
# Rows per forward pass when computing features: one shape, one compile.
_CHUNK = 1024
_RANDOM_SALT = 0x3E3


def settings(config):
  """What a memory is selected with; a stored one must match."""
  m = config.memory
  return {"size": int(m.size), "per_class": int(m.per_class),
          "selection": m.selection, "seed": int(config.seed)}


def budget(config, num_seen):
  m = config.memory
  return m.per_class * num_seen if m.per_class else m.size


def after_step(ctx, t, previous, model, variables):
  """The memory after step ``t``: ``previous`` (``None`` after a step
  from scratch, which selects every seen class) trimmed to the new quota,
  plus the step's new classes selected with ``variables`` of ``model``."""
  config = ctx.config
  num_seen = ctx.num_seen(t)
  per_class = memory_lib.quota(config.memory.size, config.memory.per_class,
                               num_seen)
  new_classes = (ctx.order[:num_seen] if previous is None
                 else ctx.groups[t])
  memory = memory_lib.trim(previous if previous is not None
                           else memory_lib.empty(), per_class)
  images, labels = ctx.source.arrays("train")
  with timer.section("exemplars"):
    for class_id in new_classes:
      rows = np.flatnonzero(labels == class_id)
      if config.memory.selection == "herding":
        features = memory_lib.normalize(
            features_of(model, variables, normalised(ctx, images, rows)))
        order = memory_lib.herding(features, per_class)
      else:
        order = memory_lib.random_order(
            len(rows), per_class,
            (config.seed, t, int(class_id), _RANDOM_SALT))
      memory = memory_lib.add(memory, int(ctx.mapping[class_id]), rows[order])
  memory_lib.check(memory, num_seen, budget(config, num_seen))
  return memory


def normalised(ctx, images, rows):
  """Float32 images of ``rows``, as the pipeline normalises them."""
  return arrays.standardize(images[rows], ctx.source.info.mean,
                            ctx.source.info.std)


def features_of(model, variables, images):
  """The penultimate features (``[rows, d]``, not normalised) of
  ``images`` under ``variables``, in inference mode."""
  return _in_chunks(_features_fn(model.apply), variables, images)


def _in_chunks(fn, variables, images):
  """``fn(variables, images)`` a ``_CHUNK`` of rows at a time (one shape,
  one compile)."""
  return arrays.apply_in_chunks(fn, variables, len(images),
                                lambda start, stop: images[start:stop],
                                _CHUNK)


@functools.lru_cache(maxsize=None)
def _features_fn(apply_fn):
  return jax.jit(functools.partial(feature_lib.features, apply_fn))


def replay_set(ctx, memory, num_old, teacher_logits_fn=None,
               teacher_variables=None):
  """The rows a rehearsal step draws beside each batch: the memory's
  normalised images and labels, and, given a teacher, its logits on
  them, zero-padded to the run's largest budget with the real rows'
  ``count`` (``data.replay``), so every step has one shape. The one place
  old-class training rows enter a step: each must be an old class's
  (``batches.check_memory_labels``)."""
  batches.check_memory_labels(memory["label"], num_old)
  images, _ = ctx.source.arrays("train")
  count = len(memory["label"])
  capacity = budget(ctx.config, ctx.num_outputs)
  out = {"image": normalised(ctx, images, memory["index"]),
         "label": memory["label"]}
  if teacher_logits_fn is not None:
    out["logits"] = _in_chunks(teacher_logits_fn, teacher_variables,
                               out["image"])
  out = {k: np.concatenate([v, np.zeros((capacity - count, *v.shape[1:]),
                                        v.dtype)]) for k, v in out.items()}
  return dict(out, count=np.int32(count))


def class_means(ctx, memory, model, variables):
  """iCaRL's class means of exemplars ``[outputs, d]`` under
  ``variables`` (``feature_lib.class_means``)."""
  images, _ = ctx.source.arrays("train")
  feats = features_of(model, variables,
                      normalised(ctx, images, memory["index"]))
  return np.asarray(feature_lib.class_means(feats, memory["label"],
                                          ctx.num_outputs))


def save(step_dir, config, memory):
  os.makedirs(step_dir, exist_ok=True)
  jsonio.write_json(os.path.join(step_dir, MEMORY_FILE), {
      **settings(config), "index": memory["index"].tolist(),
      "label": memory["label"].tolist()})


def load(step_dir, config, num_seen):
  """The memory a finished step left; refused if it was selected with
  other settings than ``config``'s or breaks its budget."""
  path = os.path.join(step_dir, MEMORY_FILE)
  fix = f"delete {step_dir} to retrain the step"
  if not os.path.exists(path):
    raise ValueError(f"{path} is missing: the step's classifier was saved "
                     f"without the exemplar memory its method needs; {fix}.")
  stored = jsonio.read_json(path, fix=fix)
  expected = settings(config)
  differ = sorted(k for k in expected if stored.get(k) != expected[k])
  if differ:
    raise ValueError(
        f"{path} holds an exemplar memory selected with "
        f"{ {k: stored.get(k) for k in differ} }, but the config has "
        f"{ {k: expected[k] for k in differ} } (config.memory.* and "
        f"config.seed); run with the config the memory was selected with, "
        f"or {fix}.")
  memory = {"index": np.asarray(stored["index"], np.int32),
            "label": np.asarray(stored["label"], np.int32)}
  try:
    memory_lib.check(memory, num_seen, budget(config, num_seen))
  except ValueError as e:
    raise ValueError(f"{path}: {e} {fix}.") from None
  return memory
