"""Building blocks shared by all classifiers: the head and the adapter."""

import flax.linen as nn
import jax.numpy as jnp


class Adapter(nn.Module):
  """Residual bottleneck ``h + up(relu(down(h)))`` with ``up`` zero-initialised.

  At initialisation it is the identity, so inserting it into a trained model
  changes nothing until it learns.
  """
  bottleneck: int

  @nn.compact
  def __call__(self, features):
    hidden = nn.relu(nn.Dense(self.bottleneck, name="down")(features))
    return features + nn.Dense(features.shape[-1],
                               kernel_init=nn.initializers.zeros,
                               name="up")(hidden)


class Classifier(nn.Module):
  """A backbone, an optional adapter, and a linear head named ``head``.

  The head's kernel is ``[features, num_classes]``; column i scores the i-th
  class of the class order, so growing the head appends columns.
  """
  backbone: nn.Module
  num_classes: int
  adapter_dim: int = 0

  @nn.compact
  def __call__(self, inputs, train=False):
    features = self.backbone(inputs, train=train)
    if self.adapter_dim:
      features = Adapter(self.adapter_dim, name="adapter")(features)
    return nn.Dense(self.num_classes, name="head")(features)


def flatten(inputs):
  return jnp.reshape(inputs, (inputs.shape[0], -1))
