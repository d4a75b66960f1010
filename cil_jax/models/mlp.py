"""Multi-layer perceptron backbone."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from cil_jax.models.layers import WithBatchNorm
from cil_jax.models.layers import flatten


class MLP(nn.Module):
  """Dense + ReLU (+ dropout) layers on flattened inputs.

  Layers are named ``layer_00``, ``layer_01``, ... so sorted names are the
  forward order (``partition.last_k`` relies on it). With ``batch_norm``
  each layer is Dense, BatchNorm, ReLU (``layer_NN/dense``,
  ``layer_NN/bn``): its running statistics are what data-free inversion
  matches (``cil_jax.synthesis.inversion``). In training, statistics are averaged
  over the ``batch`` pmap axis, so the model runs in training mode only
  under ``pmap``.
  """
  hidden_sizes: Sequence[int]
  dropout: float = 0.0
  frozen_layers: Sequence[str] = ()  # as at test time in training
  batch_norm: bool = False
  dtype: Any = jnp.float32  # compute (``layers.Classifier``)

  @nn.compact
  def __call__(self, inputs, train=False):
    x = flatten(inputs)
    for i, size in enumerate(self.hidden_sizes):
      name = f"layer_{i:02d}"
      learns = train and name not in self.frozen_layers
      if self.batch_norm:
        x = WithBatchNorm(size, dtype=self.dtype, name=name)(x, learns)
      else:
        x = nn.Dense(size, dtype=self.dtype, name=name)(x)
      x = nn.Dropout(self.dropout, deterministic=not learns)(nn.relu(x))
    return x
