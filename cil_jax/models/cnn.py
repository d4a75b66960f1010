"""A small convolutional backbone (conv-relu-pool stages, then a dense layer)."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cil_jax.models.layers import WithBatchNorm
from cil_jax.models.layers import flatten


class SmallCNN(nn.Module):
  """``len(conv_features)`` 3x3 conv + ReLU + 2x2 max-pool stages, then one
  dense layer of ``dense_size``. Layers are ``layer_00``, ... in forward order.
  With ``batch_norm`` each conv and the dense layer is followed by
  BatchNorm (``layer_NN/conv`` or ``layer_NN/dense``, then ``layer_NN/bn``;
  ``layers.WithBatchNorm``), whose statistics data-free inversion matches.
  Frozen layers run as at test time in training (no dropout, BatchNorm on
  running averages).
  """
  conv_features: Sequence[int]
  dense_size: int
  dropout: float = 0.0
  frozen_layers: Sequence[str] = ()  # as at test time in training
  batch_norm: bool = False
  dtype: Any = jnp.float32  # compute (``layers.Classifier``)

  @nn.compact
  def __call__(self, inputs, train=False):
    x = inputs
    for i, features in enumerate(self.conv_features):
      name = f"layer_{i:02d}"
      if self.batch_norm:
        x = WithBatchNorm(features, (3, 3), self.dtype, name=name)(
            x, train and name not in self.frozen_layers)
      else:
        x = nn.Conv(features, (3, 3), dtype=self.dtype, name=name)(x)
      x = nn.max_pool(nn.relu(x), (2, 2), strides=(2, 2), padding="SAME")
    x = flatten(x)
    name = f"layer_{len(self.conv_features):02d}"
    learns = train and name not in self.frozen_layers
    if self.batch_norm:
      x = WithBatchNorm(self.dense_size, dtype=self.dtype, name=name)(x,
                                                                     learns)
    else:
      x = nn.Dense(self.dense_size, dtype=self.dtype, name=name)(x)
    return nn.Dropout(self.dropout, deterministic=not learns)(nn.relu(x))
