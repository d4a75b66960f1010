"""CIFAR-style ResNet (He et al. 2016, section 4.2): 6n+2 layers, BatchNorm."""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# Data-parallel training reduces BatchNorm statistics over this pmap axis, so
# a global batch split over devices normalises exactly like one device.
from cil_jax.parallel import BATCH_AXIS


class ResidualBlock(nn.Module):
  features: int
  strides: int
  norm: functools.partial
  conv: functools.partial

  @nn.compact
  def __call__(self, x, train):
    residual = x
    y = self.conv(self.features, (3, 3), self.strides, name="conv1")(x)
    y = nn.relu(self.norm(name="bn1")(y, use_running_average=not train))
    y = self.conv(self.features, (3, 3), name="conv2")(y)
    y = self.norm(name="bn2", scale_init=nn.initializers.zeros)(
        y, use_running_average=not train)
    if residual.shape != y.shape:
      residual = self.conv(self.features, (1, 1), self.strides,
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
  dtype: Any = jnp.float32  # compute (``layers.Classifier``)

  @nn.compact
  def __call__(self, inputs, train=False):
    if (self.depth - 2) % 6:
      raise ValueError(f"ResNet depth must be 6n+2 (20, 32, 44, 56), got "
                       f"{self.depth}.")
    blocks_per_stage = (self.depth - 2) // 6
    # BatchNorm reduces its statistics in float32 whatever the dtype
    # (flax's force_float32_reductions).
    norm = functools.partial(
        nn.BatchNorm, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
        axis_name=BATCH_AXIS if (train and self.sync_batch_stats) else None)
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype)

    def learns(name):
      return train and name not in self.frozen_layers

    x = _Stem(self.width, norm, conv, name="layer_00")(inputs,
                                                        learns("layer_00"))
    index = 1
    for stage in range(3):
      for block in range(blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        name = f"layer_{index:02d}"
        x = ResidualBlock(self.width * 2**stage, strides, norm, conv,
                          name=name)(x, learns(name))
        index += 1
    return jnp.mean(x, axis=(1, 2))


class _Stem(nn.Module):
  features: int
  norm: functools.partial
  conv: functools.partial

  @nn.compact
  def __call__(self, x, train):
    x = self.conv(self.features, (3, 3), name="conv")(x)
    return nn.relu(self.norm(name="bn")(x, use_running_average=not train))
