"""df_replay: data-free class addition with replay of old-class inputs
synthesised from the teacher (docs/data_free.md). eps_kd's loss (KD form
full) with, before a step's training, a synthetic set of the old classes
made by inverting the teacher (DeepInversion: target classes and its
BatchNorm statistics; ``cil_jax.synthesis.inversion``) or by a generator trained
against it (ABD, R-DFCIL; ``cil_jax.synthesis.generator``), distilled on beside
every batch; then the head alone is fine-tuned on a class-balanced loss
over the new data and the synthetic rows; then weight aligning.

BatchNorm (``batch_stats``): ``frozen`` runs every BatchNorm on the
teacher's running statistics; ``train`` updates them from the new-class
batches; ``mixed`` from each batch's real new and synthetic old rows in
one pass; ``auto`` is resolved per step (``spec.batch_stats_for``).
"""

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
from ml_collections import config_dict

from cil_jax import losses
from cil_jax import timer
from cil_jax.data import pipeline
from cil_jax.methods import spec as spec_lib
from cil_jax.methods.shared import kd
from cil_jax.models import keras_model
from cil_jax.synthesis import generator
from cil_jax.synthesis import inversion
from cil_jax.synthesis import replay_grid

SYNTHESISERS = ("inversion", "generator")  # config.df_replay.synthesiser
HEAD_CHECKPOINTS = "_head_finetune"  # beside the step's own checkpoints


@dataclasses.dataclass(frozen=True)
class Settings:
  """``replay``: the synthesiser's settings (``inversion.Settings`` or
  ``generator.Settings``), ``None`` without replay;
  ``head_finetune_steps`` and its ``head_finetune_targets`` (soft | hard);
  ``balanced``: this is the head fine-tune itself (its targets)."""
  replay: Optional[Any] = None
  head_finetune_steps: int = 0
  head_finetune_targets: str = "soft"
  weight_aligning: bool = False
  balanced: str = ""


def defaults():
  # eps_kd's loss (KD form full, T) with its own knobs below: local CE,
  # and each step synthesises `samples` inputs of the old classes by
  # inverting the teacher (DeepInversion: target classes + matching its
  # BatchNorm statistics, so use a model with BatchNorm:
  # model.batch_norm=True), distils on batch_size (0: train.batch_size)
  # of them beside each batch with weight `weight`, then trains the head
  # alone for head_finetune_steps on a class-balanced CE over new and
  # synthetic rows.
  c = config_dict.ConfigDict()
  c.eps = "auto"  # a number in [0, 1], or auto = k / (k + m)
  c.kd_temperature = 2.0
  c.ce_form = "local"  # local | all
  # The layers a step trains (cil_jax.partition's presets; last_k: the
  # last ``last_k`` layers).
  c.layers = "all"
  c.last_k = 2
  # frozen: every BatchNorm keeps the teacher's running statistics
  # (new-class-only batches would shift them) | train (on the new-class
  # batches) | mixed (on each batch's real new and synthetic old rows
  # together, in one BatchNorm batch) | auto (per step: frozen when the new
  # classes are at most a fifth of the seen ones, else train).
  c.batch_stats = "auto"
  c.samples = 2048
  c.weight = 1.0
  c.batch_size = 0
  c.head_finetune_steps = 100  # whole epochs, at least this
  # On synthetic rows: soft (the teacher's full KD at kd_temperature) or
  # hard (CE to its prediction).
  c.head_finetune_targets = "soft"
  # After each step, scale the new head columns to the old ones' mean norm.
  c.weight_aligning = True
  # inversion: optimise the inputs themselves (DeepInversion); generator:
  # train a small generator against the teacher (ABD, R-DFCIL), then draw.
  c.synthesiser = "inversion"
  c.inversion = config_dict.ConfigDict()
  c.inversion.steps = 250  # Adam steps per synthesis batch
  c.inversion.learning_rate = 0.05
  c.inversion.batch_size = 256  # BN statistics over a batch
  c.inversion.bn_weight = 1.0
  c.inversion.tv_weight = 0.0  # total variation (images)
  c.inversion.l2_weight = 0.0
  # noise (DeepInversion) | new_data: start from the step's new-class
  # images, keeping the data's low-level statistics (a teacher without
  # BatchNorm has no other prior) | auto: noise when the teacher's
  # BatchNorm statistics guide the inversion, else new_data (when the
  # training split is in memory).
  c.inversion.init = "auto"
  c.generator = config_dict.ConfigDict()
  c.generator.steps = 500  # Adam steps of the generator
  c.generator.learning_rate = 1e-3
  c.generator.batch_size = 256  # split over the devices
  c.generator.z_dim = 64  # noise, beside the one-hot class
  c.generator.hidden = 256  # two hidden Dense layers
  c.generator.bn_weight = 1.0
  c.generator.diversity_weight = 1.0
  return c


def check(config, need, names, num_devices):
  c, inv = config.df_replay, config.df_replay.inversion
  kd.check_kd_section(config, "df_replay", need)
  need(c.layers in ("all", "last_k", "head"),
       f"config.df_replay.layers={c.layers!r}; use all, last_k or head.")
  need(c.last_k >= 1, f"config.df_replay.last_k={c.last_k} must be >= 1.")
  need(c.batch_stats in spec_lib.BATCH_STATS,
       f"config.df_replay.batch_stats={c.batch_stats!r}; use one of "
       f"{spec_lib.BATCH_STATS}.")
  need(c.samples >= 0,
       f"config.df_replay.samples={c.samples} must be >= 0 (0 turns replay "
       f"off).")
  need(c.weight >= 0, f"config.df_replay.weight={c.weight} must be >= 0.")
  need(c.batch_size >= 0,
       f"config.df_replay.batch_size={c.batch_size} must be >= 0 (0: "
       f"config.train.batch_size).")
  need(c.head_finetune_steps >= 0,
       f"config.df_replay.head_finetune_steps={c.head_finetune_steps} "
       f"must be >= 0.")
  need(c.head_finetune_targets in ("soft", "hard"),
       f"config.df_replay.head_finetune_targets={c.head_finetune_targets!r}; "
       f"use 'soft' or 'hard'.")
  need(not c.head_finetune_steps or c.samples,
       f"config.df_replay.head_finetune_steps={c.head_finetune_steps} "
       f"balances the head on synthetic old-class rows, but "
       f"config.df_replay.samples=0 makes none; set samples (e.g. 4096) or "
       f"head_finetune_steps=0.")
  need(inv.steps >= 1 and inv.batch_size >= 2,
       f"config.df_replay.inversion.steps={inv.steps} must be >= 1 and "
       f"inversion.batch_size={inv.batch_size} >= 2 (BatchNorm statistics "
       f"are matched over a batch).")
  need(c.synthesiser in SYNTHESISERS,
       f"config.df_replay.synthesiser={c.synthesiser!r}; use one of "
       f"{SYNTHESISERS}.")
  gen = c.generator
  need(min(gen.steps, gen.batch_size - 1, gen.z_dim, gen.hidden) >= 1,
       f"config.df_replay.generator.steps={gen.steps}, batch_size="
       f"{gen.batch_size}, z_dim={gen.z_dim} and hidden={gen.hidden} must "
       f"be >= 1 (batch_size >= 2: BatchNorm statistics are matched over "
       f"a batch).")
  need(gen.learning_rate > 0 and min(gen.bn_weight,
                                     gen.diversity_weight) >= 0,
       f"config.df_replay.generator.learning_rate={gen.learning_rate} must "
       f"be > 0, and bn_weight={gen.bn_weight} and diversity_weight="
       f"{gen.diversity_weight} >= 0.")
  need(inv.init in (*inversion.INITS, inversion.AUTO),
       f"config.df_replay.inversion.init={inv.init!r}; use one of "
       f"{(*inversion.INITS, inversion.AUTO)}.")
  need(inv.learning_rate > 0,
       f"config.df_replay.inversion.learning_rate={inv.learning_rate} must "
       f"be > 0.")
  need(min(inv.bn_weight, inv.tv_weight, inv.l2_weight) >= 0,
       "config.df_replay.inversion.bn_weight, tv_weight and l2_weight must "
       "be >= 0.")
  kd.check_linear_head(config, need, "df_replay", names)
  need(config.df_replay.generator.batch_size % num_devices == 0,
       f"config.df_replay.generator.batch_size="
       f"{config.df_replay.generator.batch_size} must be a multiple of the "
       f"{num_devices} devices in use (each trains the generator on its "
       f"share of the batch).")


def _synthesis_settings(c):
  if c.synthesiser == "generator":
    return generator.settings_from(c)
  return inversion.settings_from(c)


def from_config(spec, config):
  c = config.df_replay
  replay = _synthesis_settings(c) if c.samples else None
  return spec_lib.Method(
      spec, spec_lib.parse_eps(c.eps, "df_replay"), "full", c.kd_temperature,
      layers=c.layers, last_k=int(c.last_k),
      ce_form=c.ce_form, batch_stats=c.batch_stats,
      replay_weight=float(c.weight) if replay else 0.0,
      replay_batch=int(c.batch_size or config.train.batch_size),
      settings=Settings(replay, int(c.head_finetune_steps),
                        c.head_finetune_targets, bool(c.weight_aligning)))


def mixed_forward(student_apply, variables, images, replay_images, rng):
  """``(logits, replay_logits, updates)`` of one train-mode pass over the
  real rows and the synthetic rows together: BatchNorm's batch statistics,
  and so its running averages, are those of the mixture, in the rows'
  proportion."""
  logits, updates = student_apply(
      variables, jnp.concatenate([images, replay_images]), train=True,
      rngs={"dropout": rng}, mutable=["batch_stats"])
  return logits[:images.shape[0]], logits[images.shape[0]:], updates


def objective(method, build):
  """eps_kd's loss on the batch plus ``replay_weight`` times the KD on the
  synthetic rows (``replay_image``, the teacher's ``replay_logits``), whose
  BatchNorm statistics are not kept unless ``mixed``; or, for the head
  fine-tune (``settings.balanced``), a class-balanced loss over all seen
  classes: CE on the real rows (new classes) and, on the synthetic rows,
  the teacher's full KD (soft) or CE to its prediction (hard), each part
  weighted by its share of the seen classes."""
  mixed = method.batch_stats == "mixed"
  balanced = method.settings.balanced

  def loss(inputs, params):
    batch, hparams = inputs.batch, inputs.hparams
    synthetic = None
    if mixed and "replay_image" in batch:
      logits, synthetic, updates = mixed_forward(
          inputs.student_apply, {"params": params,
                                 "batch_stats": inputs.batch_stats},
          batch["image"], batch["replay_image"], inputs.rng)
      synthetic = losses.mask_logits(synthetic, hparams["num_seen"])
    else:
      logits, updates = inputs.student(params, batch["image"])
    logits = losses.mask_logits(logits, hparams["num_seen"])
    if "replay_image" in batch and synthetic is None:
      # Its BatchNorm statistics are left as they are.
      synthetic, _ = inputs.student(params, batch["replay_image"],
                                    rng=jax.random.fold_in(inputs.rng, 1))
      synthetic = losses.mask_logits(synthetic, hparams["num_seen"])
    if balanced:
      return _balanced_loss(inputs, logits, synthetic, updates)
    total, ce, kd_value = kd.ce_and_kd(inputs, logits, build.kd_form,
                                       build.kd_t2_scaling, build.local_ce)
    if "replay_image" in batch:
      total = total + hparams["replay_weight"] * losses.distillation(
          build.kd_form, losses.mask_logits(batch["replay_logits"],
                                            hparams["num_old"]),
          synthetic, hparams["kd_temperature"], build.kd_t2_scaling,
          num_old=hparams["num_old"])
    return total, (logits, updates.get("batch_stats", {}), ce, kd_value)

  def _balanced_loss(inputs, logits, synthetic, updates):
    hparams, batch = inputs.hparams, inputs.batch
    num_old, num_seen = hparams["num_old"], hparams["num_seen"]
    teacher = losses.mask_logits(batch["replay_logits"], num_old)
    if balanced == "soft":
      old_part = losses.distillation(
          "full", teacher, synthetic, hparams["kd_temperature"], False,
          num_old=num_old)
    else:
      old_part = losses.cross_entropy(synthetic, jnp.argmax(teacher, axis=-1))
    new_share = (num_seen - num_old) / num_seen
    ce = (new_share * losses.cross_entropy(logits, batch["label"])
          + (1.0 - new_share) * old_part)
    return ce, (logits, updates.get("batch_stats", {}), ce, jnp.zeros(()))
  return spec_lib.Objective(loss)


def structure(method):
  return method.settings.balanced


def fit_key(method):
  s = method.settings
  return (s.replay, method.replay_batch, s.head_finetune_steps,
          s.head_finetune_targets)


def replay_sets(ctx, t, jobs, models, key):
  """Per job, the synthetic old-class set of its previous model
  (``inversion.synthesize`` or ``generator.synthesize``), or ``None`` for
  all without replay. Jobs with the same previous model share one set;
  sets are cached in ``ctx`` for the step's head fine-tune."""
  del models
  settings = jobs[0].method.settings
  if settings.replay is None:
    return None
  name = jobs[0].method.name
  sets = []
  for job in jobs:
    cache_key = (t, id(job.previous), settings.replay)
    if cache_key not in ctx.replays:
      for old in [k for k in ctx.replays if k[0] != t]:
        del ctx.replays[old]  # an earlier step's set is not used again
      previous = job.previous
      teacher = ctx.model(ctx.num_outputs, previous.adapter_dim)
      synthesize = (generator.synthesize
                    if isinstance(settings.replay, generator.Settings)
                    else inversion.synthesize)
      synthesis, extra = _resolve_init(ctx, t, jobs[0].method)
      with timer.section("replay_synthesis"):
        replay = synthesize(
            teacher.apply, previous.variables, ctx.num_old(t),
            ctx.dataset.input_shape, key, synthesis, ctx.devices, **extra)
      print(f"{name} step {t}: synthesised {len(replay['image'])} "
            f"old-class inputs, teacher confidence "
            f"{replay['stats']['teacher_confidence']:.3f}, target hit "
            f"{replay['stats']['target_hit']:.3f}, BN-statistics loss "
            f"{replay['stats']['final_bn']:.3f}", flush=True)
      ctx.replays[cache_key] = replay
    if jax.process_index() == 0:
      os.makedirs(job.step_dir, exist_ok=True)
      replay_grid.write(os.path.join(job.step_dir, "replay_samples.png"),
                        ctx.replays[cache_key], ctx.order[:ctx.num_old(t)],
                        ctx.dataset.mean, ctx.dataset.std)
    sets.append(ctx.replays[cache_key])
  return sets


def pick_init(init, in_memory, prior):
  """``init`` resolved: auto is noise with a BatchNorm ``prior``, else
  new_data when the training split is ``in_memory``."""
  if init == inversion.AUTO:
    init = "new_data" if in_memory and not prior else "noise"
  if init == "new_data" and not in_memory:
    raise ValueError("config.df_replay.inversion.init='new_data' needs the "
                     "training split in memory; this one is streamed. Use "
                     "init='noise' or 'auto'.")
  return init


def _resolve_init(ctx, t, method):
  """The synthesiser's settings with inversion's ``init`` resolved, and
  the new-class images it starts from; the picks of the step are logged.
  Auto: from noise where the teacher's BatchNorm statistics guide the
  inversion (DeepInversion; on the zoo's BatchNorm CNN new-class starts
  cost new-class accuracy), else from the step's new-class images when
  its training split is in memory (the MLP without BatchNorm: far better
  than from noise; docs/data_free.md)."""
  synthesis = method.settings.replay
  if not isinstance(synthesis, inversion.Settings):
    return synthesis, {}
  in_memory = ctx.source.arrays("train") is not None
  # Inversion reads flax BatchNorm layers (cil_jax's models, Flax
  # modules); a Keras model's are not seen.
  prior = (bool(ctx.abstract(ctx.num_outputs, 0).get("batch_stats"))
           and not isinstance(ctx.foreign, keras_model.KerasClassifier))
  init = pick_init(synthesis.init, in_memory, prior)
  num_old, num_new = ctx.num_old(t), len(ctx.groups[t])
  print(f"{method.name} step {t}: picked batch_stats={method.batch_stats} "
        f"({num_new} new of {num_old + num_new} seen classes), eps="
        f"{method.eps_for(num_old, num_new):.3f}, synthesis from {init} "
        f"(BatchNorm prior: "
        f"{'yes' if prior else 'none'})",
        flush=True)
  synthesis = dataclasses.replace(synthesis, init=init)
  if init != "new_data":
    return synthesis, {}
  examples = pipeline.filtered(ctx.source, "train",
                               ctx.train_classes(t, scratch=False),
                               ctx.mapping)
  return synthesis, {"new_images": examples.image}


def head_finetune_method(method):
  """The head fine-tune after ``method``'s replay step: the head alone,
  class-balanced cross-entropy over real new and synthetic old rows, no
  distillation."""
  return dataclasses.replace(
      method, eps=0.0, layers="head", ce_form="all", adapter_dim=0,
      settings=dataclasses.replace(
          method.settings, weight_aligning=False, head_finetune_steps=0,
          balanced=method.settings.head_finetune_targets))


def head_finetune(method, to_fit, members, fitted, common, retrain):
  """``head_finetune_steps`` (rounded up to whole epochs of the new data)
  of the head alone on the class-balanced CE over the new data and the
  step's synthetic old rows, from the fitted variables; checkpoints beside
  the step's own, so a killed run resumes here."""
  steps = method.settings.head_finetune_steps
  if not (common["replays"] and steps):
    return fitted
  finetuned = retrain(
      head_finetune_method(method),
      [dataclasses.replace(
          members[i], variables=fitted[i], eps=0.0, teacher_variables=None,
          replay_weight=0.0,
          checkpoint_dir=members[i].checkpoint_dir + HEAD_CHECKPOINTS,
          name=members[i].name + " head fine-tune") for i in to_fit],
      epochs=-(-steps // common["train_data"].steps_per_epoch))
  return dict(zip(to_fit, finetuned))


METHOD = spec_lib.Spec(
    name="df_replay", index=4, family="data-free",
    summary="eps_kd + replay of inputs synthesised from the teacher, "
            "head fine-tune, weight aligning",
    from_config=from_config, objective=objective,
    sections={"df_replay": defaults}, check=check, member_section=True,
    structure=structure, fit_key=fit_key, rows=replay_sets,
    after_fit=head_finetune, finish=kd.align_weights)
