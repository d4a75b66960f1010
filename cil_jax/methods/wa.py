"""wa: Weight Aligning (Zhao et al. CVPR 2020, "Maintaining Discrimination
and Fairness in Class Incremental Learning"; STORES OLD DATA).
(1 - lambda) CE + lambda LwF distillation at ``kd_temperature`` (lambda
= old / seen classes) on new data and exemplar memory rows, the head's
weights clipped to be non-negative after every update (the paper's
weight clipping, so that norms compare like for like), then, after each
step, the new classes' head columns scaled to the old ones' mean norm.
"""

import dataclasses

import jax.numpy as jnp
from flax import traverse_util
from ml_collections import config_dict

from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd
from cil_jax.methods.shared import rows


@dataclasses.dataclass(frozen=True)
class Settings:
  weight_aligning: bool = True  # read by ``kd.align_weights``
  clip: bool = True


def defaults():
  # clip: the head's kernel kept >= 0 after every update (the paper's).
  c = config_dict.ConfigDict()
  c.kd_temperature = 2.0
  c.clip = True
  return c


def check(config, need, names, num_devices):
  rows.check(config, need, names, num_devices)
  need(config.wa.kd_temperature > 0,
       f"config.wa.kd_temperature={config.wa.kd_temperature} must be > 0.")
  need(not ("wa" in names and config.model.get("cosine_head", False)),
       "config.model.cosine_head=True, but config.methods lists wa, which "
       "clips and rescales a linear head's columns; set "
       "--config.model.cosine_head=False for it (run lucir apart).")


def from_config(spec, config):
  # eps None: lambda = old / seen classes, the auto rule.
  return rows.from_config(spec, config, eps=None, kd_form="renormalized",
                          kd_temperature=float(config.wa.kd_temperature),
                          settings=Settings(clip=bool(config.wa.clip)))


def clip_head(params, head_path):
  """The head's kernel with its negative weights set to 0."""
  flat = traverse_util.flatten_dict(params, sep="/")
  key = f"{head_path}/kernel"
  flat[key] = jnp.maximum(flat[key], 0.0)
  return traverse_util.unflatten_dict(flat, sep="/")


def objective(method, build):
  base = rows.ce_kd_objective(method, build)
  return dataclasses.replace(
      base, constrain=clip_head if method.settings.clip else None)


def structure(method):
  return method.settings.clip


METHOD = spec_lib.Spec(
    name="wa", index=14, family="stores examples",
    summary="CE + LwF KD on batch and memory rows, clipped head, weight "
            "aligning after each step",
    from_config=from_config, objective=objective,
    sections={**rows.SECTIONS, "wa": defaults}, check=check,
    check_steps=rows.check_steps, structure=structure,
    rows=rows.make_rows(), finish=kd.align_weights)
