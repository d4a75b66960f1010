"""What a method is, in two values.

- ``Spec``: a method's module, as one frozen dataclass of pure functions
  and flags, registered by name (``cil_jax.methods``). It owns its config
  section and defaults, their validation, how its knobs become a
  ``Method``, its train step's objective and its host-side hooks before
  and after a class step's training. Every hook is optional; generic code
  calls a hook and never asks which method it is.
- ``Method``: one method's knobs in one run, the value that travels
  through a class step (hashable: steps with equal methods train once).
  The fields are what generic code reads (the layer preset, the
  distillation, the BatchNorm mode, the rows beside each batch, what the
  step leaves for the next); ``settings`` holds the method's own.

``Objective`` is what a method's train step computes beside the generic
machinery of ``train_step``; ``StepInputs`` is what its loss sees.
"""

import dataclasses
from typing import Any, Callable, Optional

AUTO = "auto"
BATCH_STATS = ("frozen", "train", "mixed", AUTO)
# The column every table labels a method with.
FAMILIES = ("reference", "data-free", "regularisation", "stores examples",
            "oracle")


@dataclasses.dataclass(frozen=True)
class Spec:
  """One method's module. ``index`` is a stable number folded into its
  random keys and data order: never reuse or renumber one. ``sections``:
  the config sections it owns or shares, ``{key: defaults()}``.
  ``check(config, need, names, num_devices)`` validates them
  (``need(ok, message)``; ``names``: the run's methods). ``from_config(spec, config)`` makes the
  ``Method``. ``objective(method, build)`` makes the train step's
  ``Objective`` (``build``: ``BuildInfo``).

  Flags: ``teacher``: the step runs the previous model whatever eps
  (iCaRL's targets, LUCIR's features); ``member_section``: runs that
  differ only in the method's own section share C_A and train together
  (``overrides.is_member_key``); ``public``: listed in ``config.methods``
  (the base classifier's spec is not).

  Host-side hooks (each ``None``: nothing to do), in the order a class
  step calls them:

  - ``check_steps(ctx, methods)``: refuses a run the data or model cannot
    hold, before any workdir is claimed;
  - ``structure(method)``: what besides the generic knobs
    decides the compiled step (equal keys share one program);
  - ``fit_key(method)``: what else jobs trained in one fit must share;
  - ``train_rows(ctx, t, previous)``: indices of the step's training rows
    kept out of its training (``None``: all train);
  - ``step_input(method, previous)``: the train step's second input in
    place of the teacher (a penalty's anchor and weighted importance);
  - ``rows(ctx, t, jobs, models, key)``: per job, the rows that come
    beside every batch (synthetic old-class inputs, exemplar memory rows)
    or ``None``;
  - ``after_fit(method, to_fit, members, fitted, common, retrain)``: more
    training after the fit (a head fine-tune), returning ``fitted``;
    ``retrain(method, members, epochs)`` fits ``members`` again with
    another method's step;
  - ``finish(ctx, t, job, member, variables, models, training)``: before
    the classifier is saved, returning ``(variables, training)`` (weight
    aligning, bias correction);
  - ``importance(ctx, t, previous, apply_fn, start_params, variables,
    running, scratch)``: a regulariser's importance of the step's model
    (``consolidation``), and ``running``, its running state's update
    ``(running, task_grads, old_params, new_params)``;
  - ``classify(ctx, t, variables, models, memory)``: a classifier of its
    own (NME): metrics replacing the head's, with ``classifier`` naming
    it.
  """
  name: str
  index: int
  family: str
  summary: str
  from_config: Callable
  objective: Callable
  sections: Any = dataclasses.field(default_factory=dict)
  check: Optional[Callable] = None
  teacher: bool = False
  member_section: bool = False
  public: bool = True
  check_steps: Optional[Callable] = None
  structure: Optional[Callable] = None
  fit_key: Optional[Callable] = None
  train_rows: Optional[Callable] = None
  step_input: Optional[Callable] = None
  rows: Optional[Callable] = None
  after_fit: Optional[Callable] = None
  finish: Optional[Callable] = None
  importance: Optional[Callable] = None
  running: Optional[Callable] = None
  classify: Optional[Callable] = None

  def __hash__(self):  # one spec per registered name
    return hash(self.name)

  def __eq__(self, other):
    return isinstance(other, Spec) and other.name == self.name


@dataclasses.dataclass(frozen=True)
class Method:
  """A method's knobs in a run. ``eps`` is a float in [0, 1], or ``None``
  for the auto rule k/(k+m), resolved per step by ``eps_for``.
  ``kd_*``: the distillation of the previous model; ``layers``,
  ``last_k``, ``trainable_regex``, ``adapter_dim``: the layer preset
  (``cil_jax.partition``); ``joint``: trains from scratch on every seen
  class; ``ce_form``: one of ``losses.CE_FORMS``; ``batch_stats``
  (``BATCH_STATS``; ``auto`` resolved per step by ``at_step``);
  ``replay_batch`` rows beside each batch (synthetic or memory),
  ``replay_weight`` the distillation weight on synthetic rows;
  ``consolidate``: the regularisers whose anchor and importance the
  step's model leaves for the next (``methods.shared.penalties.after_step``);
  ``memory``: the step leaves an exemplar memory for the next;
  ``settings``: the method's own (a frozen dataclass, or ``None``)."""
  spec: Spec
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
  batch_stats: str = "train"
  replay_weight: float = 0.0
  replay_batch: int = 0
  consolidate: tuple = ()
  memory: bool = False
  settings: Any = None

  @property
  def name(self):
    return self.spec.name

  @property
  def index(self):
    """A stable number per method, folded into its rng and data order."""
    return self.spec.index

  @property
  def distills(self):
    """Whether the step runs the previous model as a teacher."""
    return self.spec.teacher or self.eps is None or self.eps > 0

  @property
  def freeze_batch_stats(self):
    return self.batch_stats == "frozen"

  def eps_for(self, num_old, num_new):
    if self.eps is None:
      from cil_jax import losses  # pylint: disable=g-import-not-at-top
      return losses.auto_eps(num_old, num_new)
    return self.eps


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a method's train step computes. ``loss(inputs, params)`` returns
  ``(loss, (logits, batch_stats updates, ce, kd))``: the batch's logits
  (for its accuracy), the BatchNorm statistics to keep, and the two
  metrics the step reports as ``ce`` and ``kd`` (a method names what they
  hold in ``metric_names``). ``teacher_logits``: the step gives the loss
  the teacher's logits of the batch (precomputed or run here).
  ``transform(inputs, grads, params)``: the device-mean gradient's
  transform (A-GEM's projection). ``penalty``: adds
  ``regularizers.penalty`` of the step's second input after the mean.
  ``running(running, task_grads, old_params, new_params)``: updates the
  state's per-parameter running state (SI's path integral).
  ``constrain(params, head_path)``: the parameters after each update
  projected onto the method's constraint set (WA's non-negative head)."""
  loss: Callable
  teacher_logits: bool = True
  transform: Optional[Callable] = None
  penalty: bool = False
  running: Optional[Callable] = None
  constrain: Optional[Callable] = None
  metric_names: tuple = ("ce", "kd")


@dataclasses.dataclass(frozen=True)
class BuildInfo:
  """What a method's objective is built with (``Spec.objective``, made by ``step_build``): the KD
  form and T^2 scaling of the structure (its own, or shared), whether the
  CE is local, the head's path."""
  kd_form: str
  kd_t2_scaling: bool
  local_ce: bool
  head_path: str


@dataclasses.dataclass(frozen=True)
class StepInputs:
  """What a method's loss sees of one train step on one device."""
  batch: Any
  hparams: Any
  rng: Any
  batch_stats: Any  # the state's BatchNorm statistics
  teacher: Any  # the step's second input: teacher variables or a penalty
  teacher_logits: Any  # of the batch's images, or None
  student_apply: Callable
  teacher_apply: Optional[Callable]
  head_path: str

  def student(self, params, images, rng=None, mutable=("batch_stats",),
              **kwargs):
    """The student in train mode on ``images``: ``(logits, updates)``."""
    return self.student_apply(
        {"params": params, "batch_stats": self.batch_stats}, images,
        train=True, rngs={"dropout": self.rng if rng is None else rng},
        mutable=list(mutable), **kwargs)


def parse_eps(value, section):
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


def batch_stats_for(batch_stats, num_old, num_new):
  """``batch_stats`` of a step adding ``num_new`` classes to ``num_old``;
  ``auto`` is ``frozen`` when the new classes are at most a fifth of the
  seen ones (the test set is mostly old classes, whose features the
  teacher's statistics keep: best at 9+1 and 8+2), else ``train`` (best
  at 5+5 and 5 x 2; docs/data_free.md)."""
  if batch_stats != AUTO:
    return batch_stats
  return "frozen" if 5 * num_new <= num_old + num_new else "train"
