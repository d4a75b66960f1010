"""eps_kd: Taitelbaum, Chechik & Goldberger (ICASSP 2019), the project's
method. The student, its head widened, trains on the new classes' data
alone with (1 - eps) CE + eps KD of the frozen previous model on the old
classes' logits at temperature T, updating only the layers of a preset
(``cil_jax.partition``). ``eps='auto'`` is k/(k+m) (the paper: eps grows
with the old classes' share). Data-free: no old example is stored.
"""

import dataclasses

from ml_collections import config_dict

from cil_jax import losses
from cil_jax import partition
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd


@dataclasses.dataclass(frozen=True)
class Settings:
  weight_aligning: bool = False  # after each step (``kd.align_weights``)


def defaults():
  c = config_dict.ConfigDict()
  c.eps = "auto"  # a number in [0, 1], or auto = k / (k + m)
  c.kd_form = "full"  # full (Taitelbaum et al.) | renormalized (LwF)
  c.kd_temperature = 2.0
  c.kd_t2_scaling = False
  # all | head | new_rows | last_k | adapter | regex
  c.layers = "all"
  c.last_k = 2  # layers=last_k
  c.adapter_dim = 64  # layers=adapter
  c.trainable_regex = ""  # layers=regex, e.g. "(backbone/layer_01|head)/.*"
  # all: CE over every seen class (the paper's). local: CE over the new
  # classes only (R-DFCIL), so new data does not push old logits down; only
  # KD then ranks new against old logits (kd_form=full pushes new ones
  # down: new classes unlearnt on Fashion-MNIST); one new class: CE is 0.
  c.ce_form = "all"
  # After each step, scale the new head columns (and biases) to the old
  # columns' mean norm (weight aligning, Zhao et al. CVPR 2020).
  c.weight_aligning = False
  return c


def check(config, need, names, num_devices):
  del num_devices
  c = config.eps_kd
  kd.check_kd_section(config, "eps_kd", need)
  need(c.kd_form in losses.KD_FORMS,
       f"config.eps_kd.kd_form={c.kd_form!r}; use one of {losses.KD_FORMS}.")
  need(c.layers in partition.PRESETS,
       f"config.eps_kd.layers={c.layers!r}; use one of {partition.PRESETS}.")
  need(c.last_k >= 1, f"config.eps_kd.last_k={c.last_k} must be >= 1.")
  need(c.layers != "adapter" or c.adapter_dim > 0,
       "config.eps_kd.layers='adapter' needs config.eps_kd.adapter_dim > 0.")
  need(c.layers != "regex" or c.trainable_regex,
       "config.eps_kd.layers='regex' needs config.eps_kd.trainable_regex.")
  kd.check_linear_head(config, need, "eps_kd", names)


def from_config(spec, config):
  c = config.eps_kd
  return spec_lib.Method(
      spec, spec_lib.parse_eps(c.eps, "eps_kd"), c.kd_form, c.kd_temperature,
      c.kd_t2_scaling, c.layers, c.last_k, c.trainable_regex,
      c.adapter_dim if c.layers == "adapter" else 0, ce_form=c.ce_form,
      settings=Settings(bool(c.weight_aligning)))


METHOD = spec_lib.Spec(
    name="eps_kd", index=0, family="data-free",
    summary="(1-eps) CE + eps tempered KD on old logits, a layer subset",
    from_config=from_config, objective=kd.objective,
    sections={"eps_kd": defaults}, check=check, member_section=True,
    finish=kd.align_weights)
