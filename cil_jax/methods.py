"""Methods are small sets of knobs, not classes.

``eps_kd`` reads its knobs from ``config.eps_kd``, ``df_replay`` (eps_kd's
loss with data-free replay, ``cil_jax.inversion``) from
``config.df_replay``; the references are fixed:
``finetune`` (no distillation, all layers), ``lwf`` (Li & Hoiem 2016: LwF's
renormalised KD at T=2 with equal weight on CE and KD, all layers) and
``joint`` (an oracle trained from scratch on all seen classes' data; it
breaks the no-old-data rule on purpose, to give the upper bound).

The regularisation methods ``ewc``, ``si`` and ``mas``
(``cil_jax.regularizers``) are fine-tuning of all layers plus a quadratic
penalty towards the previous model, weighted by ``config.<name>.weight``;
no distillation, no stored data.

The rehearsal methods ``er``, ``icarl`` and ``agem``
(``cil_jax.rehearsal``) store old data: an exemplar memory
(``config.memory``, ``cil_jax.exemplars``) whose rows come beside every
batch, ``config.memory.batch_size`` of them. ``er`` fine-tunes all layers
with cross-entropy over all seen classes on the batch and the memory rows;
``icarl`` trains on both with sigmoid binary cross-entropy whose old-class
targets are the previous model's sigmoid outputs, and classifies by the
nearest mean of exemplars; ``agem`` fine-tunes on the batch alone with
A-GEM's projection of its gradient against the memory rows' gradient;
``bic`` (``config.bic``) trains on both with (1 - lambda) CE + lambda
times LwF's distillation (lambda = old / seen classes, T =
``bic.kd_temperature``), on all but a held-out part of the memory and of
the new data, then fits its bias correction on that part; ``lucir`` (``config.lucir``, a model
with ``config.model.cosine_head``) trains on both with cross-entropy, the
less-forget constraint on features and the margin ranking loss
(``cil_jax.lucir``).
"""

import dataclasses
from typing import Optional

from cil_jax import generator
from cil_jax import inversion
from cil_jax import losses
from cil_jax import lucir as lucir_lib
from cil_jax import regularizers
from cil_jax import rehearsal as rehearsal_lib

METHODS = ("eps_kd", "lwf", "finetune", "joint", "df_replay", "ewc", "si",
           "mas", "er", "icarl", "agem", "bic", "lucir")
# A method's ``index`` is its place here: "base" keeps 5, the index it had
# before ewc, si and mas came, so C_A's data order and noise are unchanged.
_INDEX_ORDER = ("eps_kd", "lwf", "finetune", "joint", "df_replay", "base",
                "ewc", "si", "mas", "er", "icarl", "agem", "bic", "lucir")
AUTO = "auto"
BATCH_STATS = ("frozen", "train", "mixed", AUTO)


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's knobs. ``eps`` is a float in [0, 1], or ``None`` for the
  auto rule k/(k+m) (``config.eps_kd.eps='auto'``), resolved per step by
  ``eps_for``; the config string never reaches the train step.
  ``ce_form`` is one of ``losses.CE_FORMS``; ``weight_aligning`` rescales
  the new classes' head columns after each step (``cil_jax.rebalance``).

  Data-free replay: ``replay`` (``inversion.Settings`` or
  ``generator.Settings``: the synthesiser, or ``None``) synthesises
  old-class inputs from the teacher once per step, which the
  student distils on, ``replay_batch`` rows per step beside each batch,
  weighted ``replay_weight``; ``head_finetune_steps`` then trains the
  head alone on a class-balanced loss over the new data and the synthetic
  rows (``head_finetune``), whose targets are the teacher's soft ones or
  its predictions (``head_finetune_targets``: soft | hard).
  ``batch_stats`` (``BATCH_STATS``): ``frozen`` runs every BatchNorm on
  the teacher's running statistics, never updated from new-class-only
  batches; ``train`` updates them from the new-class batches; ``mixed``
  from each batch's real new and synthetic old rows in one pass
  (``train_step.mixed_forward``); ``auto`` is resolved per step by
  ``at_step``.
  ``balanced_replay`` (the targets) marks the head fine-tune itself.

  Regularisation: ``regularizer`` (``ewc``, ``si``, ``mas`` or ``""``)
  adds its penalty towards the previous model, weighted
  ``penalty_weight``; ``consolidate`` names the regularisers whose anchor
  and importance the step's model leaves for the next step
  (``cil_jax.consolidation``): its own for a regularisation method, and
  for C_A every one a run's methods use.

  Rehearsal: ``rehearsal`` (one of ``rehearsal.REHEARSALS`` or ``""``) draws
  ``replay_batch`` exemplar memory rows beside each batch and trains on
  them its way (``train_step``); ``memory``: the step leaves an exemplar
  memory for the next (a rehearsal method's steps, and C_A in a run with
  one). ``lucir``: LUCIR's settings (``lucir.Settings``) for ``lucir``."""
  name: str
  eps: Optional[float]
  kd_form: str = "full"
  kd_temperature: float = 1.0
  kd_t2_scaling: bool = False
  layers: str = "all"
  last_k: int = 1
  trainable_regex: str = ""
  adapter_dim: int = 0
  joint: bool = False
  ce_form: str = "all"
  weight_aligning: bool = False
  replay: Optional[inversion.Settings] = None
  replay_weight: float = 1.0
  replay_batch: int = 0
  head_finetune_steps: int = 0
  batch_stats: str = "train"
  balanced_replay: str = ""  # the head fine-tune: "soft" or "hard" targets
  head_finetune_targets: str = "soft"
  regularizer: str = ""
  penalty_weight: float = 0.0
  consolidate: tuple = ()
  rehearsal: str = ""
  memory: bool = False
  lucir: Optional[lucir_lib.Settings] = None

  @property
  def distills(self):
    """Whether the step runs the previous model as a teacher (iCaRL's
    targets are its outputs, LUCIR's less-forget constraint its
    features)."""
    return (self.rehearsal in ("icarl", "lucir") or self.eps is None
            or self.eps > 0)

  @property
  def nme(self):
    """Classified by the nearest mean of exemplars (iCaRL)."""
    return self.rehearsal == "icarl"

  @property
  def freeze_batch_stats(self):
    return self.batch_stats == "frozen"

  @property
  def mixed_batch_stats(self):
    return self.batch_stats == "mixed"

  @property
  def index(self):
    """A stable number per method, folded into its rng and data order."""
    return _INDEX_ORDER.index(self.name)

  def eps_for(self, num_old, num_new):
    if self.eps is None:
      return losses.auto_eps(num_old, num_new)
    return self.eps


def parse_eps(value, section="eps_kd"):
  """``None`` for ``"auto"``, else a float in [0, 1] (config strings like
  ``"0.3"`` too)."""
  if isinstance(value, str) and value.strip() == AUTO:
    return None
  try:
    eps = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"config.{section}.eps={value!r} is neither 'auto' nor "
                     f"a number; use e.g. --config.{section}.eps=0.5 or "
                     f"=auto.") from None
  if not 0.0 <= eps <= 1.0:
    raise ValueError(f"config.{section}.eps={eps} is outside [0, 1]; it weighs "
                     f"KD against CE as (1-eps)*CE + eps*KD.")
  return eps


def method_names(methods_string):
  names = [m.strip() for m in methods_string.split(",") if m.strip()]
  if not names:
    raise ValueError(f"config.methods is empty; list some of {METHODS}, "
                     f"comma-separated.")
  for name in names:
    if name not in METHODS:
      raise ValueError(f"Unknown method {name!r} in config.methods; choose "
                       f"from {METHODS}.")
  if len(set(names)) != len(names):
    raise ValueError(f"config.methods lists a method twice: {methods_string!r}.")
  return names


def _synthesis_settings(replay_config):
  """``inversion.Settings`` or ``generator.Settings``, as
  ``config.df_replay.synthesiser`` says."""
  if replay_config.synthesiser == "generator":
    return generator.settings_from(replay_config)
  return inversion.settings_from(replay_config)


def get_method(name, config):
  if name == "eps_kd":
    c = config.eps_kd
    return Method(name, parse_eps(c.eps, "eps_kd"), c.kd_form,
                  c.kd_temperature, c.kd_t2_scaling, c.layers, c.last_k,
                  c.trainable_regex,
                  c.adapter_dim if c.layers == "adapter" else 0,
                  ce_form=c.ce_form, weight_aligning=c.weight_aligning)
  if name == "df_replay":
    c = config.df_replay
    return Method(name, parse_eps(c.eps, "df_replay"), "full",
                  c.kd_temperature, ce_form=c.ce_form,
                  weight_aligning=c.weight_aligning,
                  replay=_synthesis_settings(c) if c.samples else None,
                  replay_weight=float(c.weight),
                  replay_batch=int(c.batch_size or config.train.batch_size),
                  head_finetune_steps=int(c.head_finetune_steps),
                  head_finetune_targets=c.head_finetune_targets,
                  batch_stats=c.batch_stats)
  if name in regularizers.REGULARIZERS:
    return Method(name, 0.0, regularizer=name,
                  penalty_weight=float(config[name].weight),
                  consolidate=(name,))
  if name in rehearsal_lib.REHEARSALS:
    batch = int(config.memory.batch_size or config.train.batch_size)
    if name == "bic":  # eps auto: lambda = old / seen classes
      return Method(name, None, "renormalized",
                    float(config.bic.kd_temperature), rehearsal=name,
                    memory=True, replay_batch=batch)
    if name == "lucir":
      return Method(name, 0.0, rehearsal=name, memory=True,
                    replay_batch=batch,
                    lucir=lucir_lib.settings_from(config.lucir))
    return Method(name, 0.0, rehearsal=name, memory=True,
                  replay_batch=batch)
  if name == "lwf":
    return Method(name, 0.5, "renormalized", 2.0, False)
  if name == "finetune":
    return Method(name, 0.0)
  if name == "joint":
    return Method(name, 0.0, joint=True)
  raise ValueError(f"Unknown method {name!r}; choose from {METHODS}.")


def batch_stats_for(batch_stats, num_old, num_new):
  """``batch_stats`` of a step adding ``num_new`` classes to ``num_old``;
  ``auto`` is ``frozen`` when the new classes are at most a fifth of the
  seen ones (the test set is mostly old classes, whose features the
  teacher's statistics keep: best at 9+1 and 8+2), else ``train`` (best
  at 5+5 and 5 x 2; docs/data_free.md)."""
  if batch_stats != AUTO:
    return batch_stats
  return "frozen" if 5 * num_new <= num_old + num_new else "train"


def at_step(method, num_old, num_new):
  """``method`` with its per-step choices resolved for a step adding
  ``num_new`` classes to ``num_old``."""
  return dataclasses.replace(method, batch_stats=batch_stats_for(
      method.batch_stats, num_old, num_new))


def head_finetune(method):
  """The head fine-tune after ``method``'s replay step: the head alone,
  class-balanced cross-entropy over real new and synthetic old rows, no
  distillation."""
  return dataclasses.replace(
      method, eps=0.0, layers="head", ce_form="all", adapter_dim=0,
      weight_aligning=False, head_finetune_steps=0,
      balanced_replay=method.head_finetune_targets)


BASE = Method("base", 0.0)  # step 0: plain cross-entropy on the first group


def base_for(all_methods):
  """C_A's method: ``BASE``, leaving the anchor and importance of every
  regulariser among ``all_methods``, and an exemplar memory if one of
  them rehearses."""
  kinds = sorted({m.regularizer for m in all_methods if m.regularizer})
  return dataclasses.replace(BASE, consolidate=tuple(kinds),
                             memory=any(m.memory for m in all_methods))
