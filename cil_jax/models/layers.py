"""Building blocks shared by all classifiers: the head and the adapter.

Every module takes ``dtype``, the dtype its layers compute in (inputs,
activations, matmuls and convolutions); parameters are float32 whatever it
is (flax's ``param_dtype``), so a bfloat16 model has the variables, the
checkpoint and the optimizer state of a float32 one.
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from cil_jax.parallel import BATCH_AXIS


class Adapter(nn.Module):
  """Residual bottleneck ``h + up(relu(down(h)))`` with ``up`` zero-initialised.

  At initialisation it is the identity, so inserting it into a trained model
  changes nothing until it learns.
  """
  bottleneck: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features):
    hidden = nn.relu(nn.Dense(self.bottleneck, dtype=self.dtype,
                              name="down")(features))
    return features + nn.Dense(features.shape[-1],
                               kernel_init=nn.initializers.zeros,
                               dtype=self.dtype, name="up")(hidden)


class WithBatchNorm(nn.Module):
  """A Dense layer (``dense``), or with ``kernel_size`` a Conv (``conv``),
  of ``features``, then BatchNorm (``bn``): momentum 0.9, epsilon 1e-5,
  statistics averaged over the ``batch`` pmap axis in training (so a model
  trains under ``pmap``) and reduced in float32 whatever the dtype (flax's
  force_float32_reductions). Its running statistics are what data-free
  inversion matches (``cil_jax.synthesis.inversion``)."""
  features: int
  kernel_size: Optional[Tuple[int, int]] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train):
    if self.kernel_size is None:
      x = nn.Dense(self.features, dtype=self.dtype, name="dense")(x)
    else:
      x = nn.Conv(self.features, self.kernel_size, dtype=self.dtype,
                  name="conv")(x)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                        epsilon=1e-5, axis_name=BATCH_AXIS if train else None,
                        dtype=self.dtype, name="bn")(x)


SCALE = "scale"  # the cosine head's sigma: a scalar, not a column per class


class CosineHead(nn.Module):
  """A cosine-normalised head (Hou et al. 2019, LUCIR): ``scale * cos(f,
  w_i)``, the cosine of the features and each class's kernel column times
  one learnable scalar ``scale`` (sigma), no bias. Its kernel has a linear
  head's layout, so widening and masking treat its columns alike; the
  scale is one number for all classes (``SCALE``)."""
  num_classes: int
  scale_init: float = 10.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features):
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (features.shape[-1], self.num_classes))
    scale = self.param(SCALE, nn.initializers.constant(self.scale_init), ())
    return scale * cosine(features, kernel, self.dtype)


def l2_normalize(x, axis=-1):
  """``x`` scaled to unit L2 norm along ``axis`` (a zero vector stays
  zero)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def cosine(features, kernel, dtype=jnp.float32):
  """``[rows, classes]`` cosines of each feature row and kernel column."""
  rows = l2_normalize(jnp.asarray(features, jnp.float32))
  kernel = l2_normalize(jnp.asarray(kernel, jnp.float32), axis=0)
  return jnp.dot(rows.astype(dtype), kernel.astype(dtype))


class Classifier(nn.Module):
  """A backbone, an optional adapter, and a head named ``head``: linear, or
  with ``cosine_head`` a ``CosineHead`` starting at scale
  ``cosine_scale_init``.

  The head's kernel is ``[features, num_classes]``; column i scores the i-th
  class of the class order, so growing the head appends columns. Inputs
  enter in ``dtype`` (the backbone's too); the head computes the logits in
  it and returns them as float32, so every softmax, loss and metric
  downstream runs in float32.
  """
  backbone: nn.Module
  num_classes: int
  adapter_dim: int = 0
  dtype: Any = jnp.float32
  cosine_head: bool = False
  cosine_scale_init: float = 10.0

  @nn.compact
  def __call__(self, inputs, train=False):
    features = self.backbone(jnp.asarray(inputs, self.dtype), train=train)
    if self.adapter_dim:
      features = Adapter(self.adapter_dim, self.dtype,
                         name="adapter")(features)
    if self.cosine_head:
      logits = CosineHead(self.num_classes, self.cosine_scale_init,
                          self.dtype, name="head")(features)
    else:
      logits = nn.Dense(self.num_classes, dtype=self.dtype,
                        name="head")(features)
    return logits.astype(jnp.float32)


def flatten(inputs):
  return jnp.reshape(inputs, (inputs.shape[0], -1))
