"""Multi-layer perceptron backbone."""

from typing import Sequence

import flax.linen as nn

from cil_jax.models.layers import flatten


class MLP(nn.Module):
  """Dense + ReLU (+ dropout) layers on flattened inputs.

  Layers are named ``layer_00``, ``layer_01``, ... so sorted names are the
  forward order (``partition.last_k`` relies on it).
  """
  hidden_sizes: Sequence[int]
  dropout: float = 0.0
  frozen_layers: Sequence[str] = ()  # no dropout after these in training

  @nn.compact
  def __call__(self, inputs, train=False):
    x = flatten(inputs)
    for i, size in enumerate(self.hidden_sizes):
      name = f"layer_{i:02d}"
      x = nn.relu(nn.Dense(size, name=name)(x))
      x = nn.Dropout(self.dropout, deterministic=not train
                     or name in self.frozen_layers)(x)
    return x
