"""Optimizers and learning-rate schedules from ``config.optim``.

An optimizer is split in two: ``make_direction`` (momentum, Adam's moments,
weight decay: everything but the learning rate) is an optax transformation,
and ``learning_rate(optim_config, count, total_steps)`` is the schedule as a
pure function of arrays. The train step multiplies the direction by
``-learning_rate``, with ``total_steps`` a runtime value, so one compiled
step serves class steps of any length (optax's own optimizers are exactly
``direction`` followed by ``scale_by_learning_rate``).
"""

import jax.numpy as jnp
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def learning_rate(optim_config, count, total_steps):
  """The learning rate at update ``count`` of ``total_steps``: ``constant``,
  ``cosine`` (to 0) or ``step`` (times ``step_factor`` at each fraction in
  ``step_boundaries``), after ``warmup_steps`` of linear warm-up. ``count``
  and ``total_steps`` may be traced."""
  lr = optim_config.learning_rate
  count = jnp.asarray(count, jnp.float32)
  total = jnp.asarray(total_steps, jnp.float32)
  warmup = jnp.minimum(float(optim_config.warmup_steps),
                       jnp.maximum(total - 1.0, 0.0))
  decay_steps = jnp.maximum(total - warmup, 1.0)
  t = jnp.maximum(count - warmup, 0.0)
  if optim_config.schedule == "constant":
    main = jnp.full((), lr, jnp.float32)
  elif optim_config.schedule == "cosine":
    main = lr * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(t, decay_steps)
                                     / decay_steps))
  elif optim_config.schedule == "step":
    drops = sum((t >= jnp.floor(f * decay_steps)).astype(jnp.float32)
                for f in optim_config.step_boundaries)
    main = lr * optim_config.step_factor ** drops
  else:
    raise ValueError(f"Unknown schedule {optim_config.schedule!r}; use one "
                     f"of {SCHEDULES}.")
  warming = lr * count / jnp.maximum(warmup, 1.0)
  return jnp.where(count < warmup, warming, main)


def learning_rate_schedule(optim_config, total_steps):
  """``learning_rate`` as an optax schedule of the update count."""
  return lambda count: learning_rate(optim_config, count, total_steps)


def make_direction(optim_config):
  """SGD (+momentum, nesterov), Adam or AdamW without the learning rate.

  ``weight_decay`` is decoupled for AdamW (scaled by the learning rate, as
  optax does) and added to the gradient (L2) for SGD and Adam.
  """
  if optim_config.schedule not in SCHEDULES:
    raise ValueError(f"Unknown schedule {optim_config.schedule!r}; use one "
                     f"of {SCHEDULES}.")
  name, wd = optim_config.name, optim_config.weight_decay
  if name == "adamw":
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(wd))
  if name == "sgd":
    base = (optax.trace(decay=optim_config.momentum,
                        nesterov=optim_config.nesterov)
            if optim_config.momentum else optax.identity())
  elif name == "adam":
    base = optax.scale_by_adam()
  else:
    raise ValueError(f"Unknown optimizer {name!r}; set config.optim.name to "
                     f"one of {OPTIMIZERS}.")
  return optax.chain(optax.add_decayed_weights(wd), base) if wd else base


def make_optimizer(optim_config, total_steps):
  """The whole optimizer for a fixed ``total_steps`` (direction, then the
  scheduled learning rate), for use outside the train step."""
  return optax.chain(
      make_direction(optim_config),
      optax.scale_by_learning_rate(
          learning_rate_schedule(optim_config, total_steps)))
