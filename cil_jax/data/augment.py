"""The one training augmentation: a random crop of the image padded by
``PAD`` reflected pixels, and a random horizontal flip (the CIFAR standard).

It runs in JAX inside the pmapped step, on either placement's batch. Its key
comes from the data order (epoch seed, step index) and the device index, never
from the model's rng: every member of a stack of runs (``cil_jax.step.members``)
sees the same augmented batch, and a resumed run sees the same as before.
"""

import jax
import jax.numpy as jnp
from jax import lax

from cil_jax import parallel

PAD = 4


def draw(key, num_images):
  """Per image: crop offsets ``[n, 2]`` (row, column) into the padded
  image, each in ``0..2 * PAD``, and whether to flip, ``[n]``."""
  k_y, k_x, k_flip = jax.random.split(key, 3)
  offsets = jnp.stack([
      jax.random.randint(k_y, (num_images,), 0, 2 * PAD + 1),
      jax.random.randint(k_x, (num_images,), 0, 2 * PAD + 1)], axis=-1)
  return offsets, jax.random.bernoulli(k_flip, 0.5, (num_images,))


def crop_flip(images, offsets, flips):
  """``images`` ``[n, H, W, C]`` reflect-padded by ``PAD``, cropped back to
  ``H x W`` at ``offsets`` and mirrored left-right where ``flips``."""
  _, height, width, channels = images.shape
  padded = jnp.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)),
                   mode="reflect")
  crops = jax.vmap(lambda image, offset: lax.dynamic_slice(
      image, (offset[0], offset[1], 0), (height, width, channels)))(
          padded, offsets)
  return jnp.where(flips[:, None, None, None], crops[:, :, ::-1], crops)


def random_crop_flip(key, images):
  return crop_flip(images, *draw(key, images.shape[0]))


def device_key(augment_seed):
  """The key of this device's share of a step's batch, from the feed's
  ``augment_seed`` (epoch seed, step index); call inside the pmap."""
  key = jax.random.fold_in(jax.random.PRNGKey(augment_seed[0]),
                           augment_seed[1])
  return jax.random.fold_in(key, lax.axis_index(parallel.BATCH_AXIS))
