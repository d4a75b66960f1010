"""Optimizers and learning-rate schedules from ``config.optim``."""

import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")


def learning_rate_schedule(optim_config, total_steps):
  """``constant``, ``cosine`` (to 0) or ``step`` (times ``step_factor`` at
  each fraction in ``step_boundaries``), after ``warmup_steps`` of linear
  warm-up."""
  lr = optim_config.learning_rate
  warmup = min(optim_config.warmup_steps, max(total_steps - 1, 0))
  decay_steps = max(total_steps - warmup, 1)
  if optim_config.schedule == "constant":
    main = optax.constant_schedule(lr)
  elif optim_config.schedule == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps)
  elif optim_config.schedule == "step":
    main = optax.piecewise_constant_schedule(
        lr, {int(f * decay_steps): optim_config.step_factor
             for f in optim_config.step_boundaries})
  else:
    raise ValueError(f"Unknown schedule {optim_config.schedule!r}; use one "
                     f"of {SCHEDULES}.")
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup), main], [warmup])


def make_optimizer(optim_config, total_steps):
  """SGD (+momentum, nesterov), Adam or AdamW with the configured schedule.

  ``weight_decay`` is decoupled for AdamW and added to the gradient (L2) for
  SGD and Adam.
  """
  schedule = learning_rate_schedule(optim_config, total_steps)
  name, wd = optim_config.name, optim_config.weight_decay
  if name == "adamw":
    return optax.adamw(schedule, weight_decay=wd)
  if name == "sgd":
    base = optax.sgd(schedule, momentum=optim_config.momentum or None,
                     nesterov=optim_config.nesterov)
  elif name == "adam":
    base = optax.adam(schedule)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; set config.optim.name to "
                     f"one of {OPTIMIZERS}.")
  return optax.chain(optax.add_decayed_weights(wd), base) if wd else base
