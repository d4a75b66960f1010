"""A Flax module of the user's as C_A (``models.foreign``): its metadata
from the config when its checkpoint has none, and its loading: import,
head found or checked, the widened output checked, variables loaded and
checked against the module's shapes. ``teacher.load`` is the door."""

import jax
import jax.numpy as jnp

from cil_jax.classifier import checkpoint
from cil_jax.classifier import plain_checkpoint
from cil_jax.models import foreign


def config_metadata(config, dataset, keras_file=False):
  """The metadata of a plain checkpoint of ``config.teacher.module`` (or of
  a ``.keras`` file), from the config (``head_path`` may still be empty:
  detected later)."""
  c = config.teacher
  if not c.classes:
    raise ValueError(
        f"config.teacher.checkpoint={c.checkpoint!r} has no cil_jax metadata, "
        f"so config.teacher.classes must list the dataset class id of each "
        f"of the teacher's outputs, in output order, e.g. "
        f"--config.teacher.classes='(0,1,2,3,4,5,6,7)'.")
  names = ([n.strip() for n in c.class_names.split(",")]
           if c.class_names else None)
  if keras_file:
    if c.module:
      raise ValueError(f"config.teacher.checkpoint={c.checkpoint!r} is a "
                       f"Keras model; unset config.teacher.module.")
    model = {"name": checkpoint.KERAS_MODEL}
  else:
    _, kwargs = foreign.import_module(c.module, c.module_kwargs)
    model = {"name": checkpoint.FLAX_MODEL, "module": c.module,
             "kwargs": kwargs, "train_kwarg": c.train_kwarg}
  meta = {"format": checkpoint.FORMAT, "model": model,
          "adapter_dim": 0, "num_classes": len(c.classes),
          "class_order": [int(v) for v in c.classes], "class_names": names,
          "input_shape": list(dataset.input_shape),
          "head_path": c.head_path or "?"}
  checkpoint.check_metadata(meta, "config.teacher", fix=(
      "Correct config.teacher.classes / class_names"))
  return {**meta, "head_path": c.head_path}


def load(config, dataset, meta, meta_path):
  """A Flax module's teacher: imported, its head found (or checked), its
  variables loaded and checked against the module's shapes."""
  model = meta["model"]
  if config.teacher.module and config.teacher.module != model["module"]:
    raise ValueError(
        f"{meta_path} names module {model['module']!r} but "
        f"config.teacher.module={config.teacher.module!r}; unset one.")
  module, _ = foreign.import_module(model["module"], model.get("kwargs", {}),
                                    f"the module of {meta_path}")
  train_kwarg = model.get("train_kwarg", "")
  denses, order, width = foreign.trace(module, dataset.input_shape,
                                       train_kwarg)
  num_classes = meta["num_classes"]
  if width != num_classes:
    raise foreign.ForeignModelError(
        f"{model['module']} outputs {width} logits but {meta_path} gives the "
        f"teacher {num_classes} classes {meta['class_order']}; list one "
        f"class id per output.")
  head = foreign.find_head(denses, num_classes,
                           config.teacher.head_path or meta["head_path"],
                           meta_path)
  given = foreign.FlaxClassifier(module, head, num_classes, train_kwarg)
  x = jnp.zeros((1, *dataset.input_shape), jnp.float32)
  abstract = jax.eval_shape(given.init, jax.random.PRNGKey(0), x)
  wider = given.widened(num_classes + 1)
  if jax.eval_shape(wider.apply, jax.eval_shape(
      wider.init, jax.random.PRNGKey(0), x), x).shape[-1] != num_classes + 1:
    raise foreign.ForeignModelError(
        f"{meta_path}: widening the Dense at {head!r} does not widen the "
        f"module's output, so it is not the final layer; give the path of "
        f"the Dense whose outputs the module returns.")
  path = config.teacher.checkpoint
  if meta_path == "config.teacher":
    variables = plain_checkpoint.load(path)
    checkpoint.check_shapes(
        variables, abstract, path, f"{model['module']} with "
        f"{model.get('kwargs') or 'no'} keyword arguments",
        "Check config.teacher.module, module_kwargs and the checkpoint.")
  else:
    variables, _ = checkpoint.load_classifier(path, abstract)
  layers = foreign.layer_order(abstract["params"], order)
  return variables, {**meta, "head_path": head}, foreign.FlaxClassifier(
      module, head, num_classes, train_kwarg, layers)
