"""CIFAR-style ResNet (He et al. 2016, section 4.2): 6n+2 layers, BatchNorm."""

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Data-parallel training reduces BatchNorm statistics over this pmap axis, so
# a global batch split over devices normalises exactly like one device.
from cil_jax.parallel import BATCH_AXIS


class ResidualBlock(nn.Module):
  features: int
  strides: int
  norm: functools.partial

  @nn.compact
  def __call__(self, x, train):
    residual = x
    y = nn.Conv(self.features, (3, 3), self.strides, use_bias=False,
                name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y, use_running_average=not train))
    y = nn.Conv(self.features, (3, 3), use_bias=False, name="conv2")(y)
    y = self.norm(name="bn2", scale_init=nn.initializers.zeros)(
        y, use_running_average=not train)
    if residual.shape != y.shape:
      residual = nn.Conv(self.features, (1, 1), self.strides, use_bias=False,
                         name="shortcut_conv")(residual)
      residual = self.norm(name="shortcut_bn")(residual,
                                               use_running_average=not train)
    return nn.relu(residual + y)


class ResNetCifar(nn.Module):
  """Depth 20, 32, 44, 56, ... (``depth = 6n + 2``), widths w, 2w, 4w.

  Top-level layers in forward order: ``layer_00`` (stem conv + BN), then one
  ``layer_NN`` per residual block; global average pooling ends the backbone.
  ``sync_batch_stats`` reduces BatchNorm statistics over the ``batch`` pmap
  axis; it must be off when the model runs outside ``pmap``.
  """
  depth: int = 20
  width: int = 16
  sync_batch_stats: bool = True
  # Layers whose BatchNorms use their running averages even in training,
  # so frozen layers compute what they compute at test time.
  frozen_layers: Sequence[str] = ()

  @nn.compact
  def __call__(self, inputs, train=False):
    if (self.depth - 2) % 6:
      raise ValueError(f"ResNet depth must be 6n+2 (20, 32, 44, 56), got "
                       f"{self.depth}.")
    blocks_per_stage = (self.depth - 2) // 6
    norm = functools.partial(
        nn.BatchNorm, momentum=0.9, epsilon=1e-5,
        axis_name=BATCH_AXIS if (train and self.sync_batch_stats) else None)

    def learns(name):
      return train and name not in self.frozen_layers

    x = _Stem(self.width, norm, name="layer_00")(inputs, learns("layer_00"))
    index = 1
    for stage in range(3):
      for block in range(blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        name = f"layer_{index:02d}"
        x = ResidualBlock(self.width * 2**stage, strides, norm,
                          name=name)(x, learns(name))
        index += 1
    return jnp.mean(x, axis=(1, 2))


class _Stem(nn.Module):
  features: int
  norm: functools.partial

  @nn.compact
  def __call__(self, x, train):
    x = nn.Conv(self.features, (3, 3), use_bias=False, name="conv")(x)
    return nn.relu(self.norm(name="bn")(x, use_running_average=not train))
