"""Building blocks shared by all classifiers: the head and the adapter.

Every module takes ``dtype``, the dtype its layers compute in (inputs,
activations, matmuls and convolutions); parameters are float32 whatever it
is (flax's ``param_dtype``), so a bfloat16 model has the variables, the
checkpoint and the optimizer state of a float32 one.
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp


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


class Classifier(nn.Module):
  """A backbone, an optional adapter, and a linear head named ``head``.

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

  @nn.compact
  def __call__(self, inputs, train=False):
    features = self.backbone(jnp.asarray(inputs, self.dtype), train=train)
    if self.adapter_dim:
      features = Adapter(self.adapter_dim, self.dtype,
                         name="adapter")(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype,
                      name="head")(features)
    return logits.astype(jnp.float32)


def flatten(inputs):
  return jnp.reshape(inputs, (inputs.shape[0], -1))
