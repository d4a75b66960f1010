"""Cross-entropy plus tempered distillation of the previous model on the
batch: the objective of eps_kd, lwf, finetune, joint, the base classifier
and the regularisation methods (whose penalty the generic step adds), and
the head rescaling after a step (weight aligning) that eps_kd and
df_replay offer.

    loss = (1 - eps) * CE(student, y) + eps * KD(teacher_old, student_old; T)

with eps, T, the old and seen class counts runtime arrays of the state
(``train_step.TrainState.hparams``), so one compiled step serves every
class step and every eps of a sweep.
"""

import jax.numpy as jnp

from cil_jax import losses
from cil_jax import rebalance
from cil_jax.methods import spec as spec_lib


def ce_and_kd(inputs, logits, kd_form, kd_t2_scaling, local_ce):
  """``(loss, ce, kd)`` of the batch's masked ``logits``: the CE over the
  seen classes (``local_ce``: the new ones only), mixed with the KD of the
  teacher's logits when the step has them. A step with eps 0 (a plain
  method in a distilling method's program, ``step_build.structure``)
  reports no KD."""
  hparams = inputs.hparams
  ce = losses.cross_entropy(
      losses.mask_logits(logits, hparams["num_seen"], hparams["num_old"])
      if local_ce else logits, inputs.batch["label"])
  if inputs.teacher_logits is None:
    return ce, ce, jnp.zeros(())
  kd = losses.distillation(
      kd_form, losses.mask_logits(inputs.teacher_logits, hparams["num_old"]),
      logits, hparams["kd_temperature"], kd_t2_scaling,
      num_old=hparams["num_old"])
  loss = losses.eps_mix(ce, kd, hparams["eps"])
  return loss, ce, jnp.where(hparams["eps"] > 0, kd, 0.0)


def objective(method, build):
  """The batch alone through the student, ``ce_and_kd``."""
  del method

  def loss(inputs, params):
    logits, updates = inputs.student(params, inputs.batch["image"])
    logits = losses.mask_logits(logits, inputs.hparams["num_seen"])
    total, ce, kd = ce_and_kd(inputs, logits, build.kd_form,
                              build.kd_t2_scaling, build.local_ce)
    return total, (logits, updates.get("batch_stats", {}), ce, kd)
  return spec_lib.Objective(loss)


def align_weights(ctx, t, job, member, variables, models, training):
  """``Spec.finish`` of a method with ``settings.weight_aligning``: the new
  classes' head columns (and biases) scaled to the old columns' mean norm
  (Zhao et al. CVPR 2020), before saving, so a resumed run loads the
  aligned classifier."""
  del models
  if job.method.settings.weight_aligning and job.previous is not None:
    variables, gamma = rebalance.align_variables(
        variables, ctx.num_old(t), ctx.num_seen(t), ctx.head_path)
    print(f"{member.name}: weight aligning scaled the new columns by "
          f"{gamma:.4f}", flush=True)
  return variables, training


def check_kd_section(config, section, need):
  """The KD knobs a section shares with eps_kd: T > 0 and the CE form."""
  c = config[section]
  need(c.kd_temperature > 0,
       f"config.{section}.kd_temperature={c.kd_temperature} must be > 0.")
  need(c.ce_form in losses.CE_FORMS,
       f"config.{section}.ce_form={c.ce_form!r}; use one of "
       f"{losses.CE_FORMS}.")


def check_linear_head(config, need, section, names):
  """Weight aligning rescales a linear head's columns and bias: refused
  with the cosine head."""
  need(not (section in names and config.model.get("cosine_head", False)
            and config[section].weight_aligning),
       f"config.model.cosine_head=True, but config.methods lists "
       f"{section}, which rescales a linear head's columns and bias "
       f"(weight aligning); set --config.model.cosine_head=False for it "
       f"(run lucir apart), or turn off config.{section}.weight_aligning.")
