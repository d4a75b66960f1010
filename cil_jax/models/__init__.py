"""Model registry: a model config and a class count give a flax module."""

import jax
import jax.numpy as jnp

from cil_jax.models.cnn import SmallCNN
from cil_jax.models.layers import Classifier
from cil_jax.models.mlp import MLP
from cil_jax.models.resnet import ResNetCifar

MODEL_NAMES = ("mlp", "cnn", "resnet")
# ``config.train.dtype``: what the models compute in; parameters, optimizer
# state and checkpoints are float32 with either.
COMPUTE_DTYPES = ("float32", "bfloat16")


def build_model(model_config, num_classes, adapter_dim=0, frozen_layers=(),
                dtype="float32"):
  """Returns a ``Classifier`` for ``model_config.name`` with ``num_classes``.

  ``adapter_dim > 0`` inserts a zero-initialised residual adapter between the
  backbone and the head. ``frozen_layers`` (backbone layer names such as
  ``layer_03``) run as at test time even in training: no dropout, BatchNorm
  on running averages. ``dtype`` (one of ``COMPUTE_DTYPES``) is what the
  layers compute in; the logits come out float32. Parameters are the same
  either way. ``model_config.cosine_head`` gives the model LUCIR's cosine
  head (``layers.CosineHead``); configs and metadata without the key have
  a linear head.
  """
  name = model_config.name
  frozen_layers = tuple(frozen_layers)
  dtype = jnp.dtype(dtype)
  if name == "mlp":
    backbone = MLP(tuple(model_config.hidden_sizes), model_config.dropout,
                   frozen_layers, model_config.get("batch_norm", False),
                   dtype=dtype)
  elif name == "cnn":
    backbone = SmallCNN(tuple(model_config.conv_features),
                        model_config.dense_size, model_config.dropout,
                        frozen_layers, model_config.get("batch_norm", False),
                        dtype=dtype)
  elif name == "resnet":
    backbone = ResNetCifar(model_config.resnet_depth, model_config.resnet_width,
                           frozen_layers=frozen_layers, dtype=dtype)
  else:
    raise ValueError(f"Unknown model {name!r}: set config.model.name to one "
                     f"of {MODEL_NAMES}.")
  return Classifier(backbone=backbone, num_classes=num_classes,
                    adapter_dim=adapter_dim, dtype=dtype,
                    cosine_head=model_config.get("cosine_head", False),
                    cosine_scale_init=model_config.get("cosine_scale_init",
                                                       10.0))


def abstract_variables(model, input_shape):
  """Shapes and dtypes of ``model``'s variables, without computing them
  (abstract inputs: an eager key or zeros would compile small programs)."""
  return jax.eval_shape(model.init,
                        jax.ShapeDtypeStruct((2,), jnp.uint32),
                        jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
