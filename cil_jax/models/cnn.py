"""A small convolutional backbone (conv-relu-pool stages, then a dense layer)."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cil_jax.models.layers import flatten


class SmallCNN(nn.Module):
  """``len(conv_features)`` 3x3 conv + ReLU + 2x2 max-pool stages, then one
  dense layer of ``dense_size``. Layers are ``layer_00``, ... in forward order.
  """
  conv_features: Sequence[int]
  dense_size: int
  dropout: float = 0.0
  frozen_layers: Sequence[str] = ()  # no dropout after these in training
  dtype: Any = jnp.float32  # compute (``layers.Classifier``)

  @nn.compact
  def __call__(self, inputs, train=False):
    x = inputs
    for i, features in enumerate(self.conv_features):
      x = nn.relu(nn.Conv(features, (3, 3), dtype=self.dtype,
                          name=f"layer_{i:02d}")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
    x = flatten(x)
    name = f"layer_{len(self.conv_features):02d}"
    x = nn.relu(nn.Dense(self.dense_size, dtype=self.dtype, name=name)(x))
    return nn.Dropout(self.dropout, deterministic=not train
                      or name in self.frozen_layers)(x)
