"""The zoo's modules, written as someone outside cil_jax would: their own
layer names, their own keyword for training mode, inputs normalised by
their own mean and std (``fashion.MEAN``, ``fashion.STD``)."""

import flax.linen as nn
import jax.numpy as jnp


class ConvNet(nn.Module):
  """Two conv blocks with BatchNorm, a dense layer, dropout, the head."""
  num_classes: int = 8
  width: int = 16

  @nn.compact
  def __call__(self, x, train=False):
    for i, features in enumerate((self.width, 2 * self.width)):
      x = nn.Conv(features, (3, 3), name=f"conv{i}")(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       name=f"bn{i}")(x)
      x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(64, name="fc")(x))
    x = nn.Dropout(0.25, deterministic=not train)(x)
    return nn.Dense(self.num_classes, name="classifier")(x)


class _Block(nn.Module):
  features: int
  stride: int

  @nn.compact
  def __call__(self, x, train):
    norm = lambda name: nn.BatchNorm(use_running_average=not train,
                                     momentum=0.9, name=name)
    y = nn.Conv(self.features, (3, 3), (self.stride, self.stride),
                use_bias=False, name="conv_a")(x)
    y = nn.relu(norm("bn_a")(y))
    y = nn.Conv(self.features, (3, 3), use_bias=False, name="conv_b")(y)
    y = norm("bn_b")(y)
    if x.shape != y.shape:
      x = norm("bn_skip")(nn.Conv(self.features, (1, 1),
                                  (self.stride, self.stride), use_bias=False,
                                  name="skip")(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A small residual net: stem, three blocks (16, 32 at stride 2, 32),
  global average pooling, the head."""
  num_classes: int = 8

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Conv(16, (3, 3), use_bias=False, name="stem")(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                             name="stem_bn")(x))
    for i, (features, stride) in enumerate(((16, 1), (32, 2), (32, 1))):
      x = _Block(features, stride, name=f"block{i}")(x, train)
    return nn.Dense(self.num_classes, name="fc")(jnp.mean(x, axis=(1, 2)))


class PlainMLP(nn.Module):
  """784-256-256 with ReLU, no BatchNorm: what the PyTorch recipe of
  docs/checkpoint.md produces once converted."""
  num_classes: int = 8

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(256, name="fc1")(x))
    x = nn.relu(nn.Dense(256, name="fc2")(x))
    return nn.Dense(self.num_classes, name="fc3")(x)


FLAX = {"flax_cnn": ConvNet, "flax_resnet": ResNet, "plain_mlp": PlainMLP}
