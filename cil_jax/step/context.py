"""What every class step of a run (or of a group of runs) shares.

``StepContext`` holds the config, the data source, the class sequence and
the devices, and caches what steps reuse: the training data of the last
class set, the test data of each seen-class set, the model's one
initialisation and one eval function per model structure. It also hands
out the random keys, one per purpose.

Every model of a run has a head for all ``num_outputs`` classes of its
sequence; a step's classes not yet seen are masked (``losses.mask_logits``),
so every class step of every method reuses one compiled train step per
method structure and one eval function.
"""

from concurrent import futures
import dataclasses
import time

import jax
import numpy as np

from cil_jax.classifier import checkpoint
from cil_jax.classifier import equivalence
from cil_jax import evaluate
from cil_jax import parallel
from cil_jax import timer
from cil_jax.step import train_step as ts
from cil_jax.data import classes
from cil_jax.data import pipeline
from cil_jax.data import train_data
from cil_jax.models import abstract_variables
from cil_jax.models import build_model
from cil_jax.models.expand import HEAD


_DROPOUT = 1  # the purpose of a key, mixed into its seed
_REPLAY = 2


@dataclasses.dataclass(frozen=True)
class StepKeys:
  """The random keys of one (class step, method): ``dropout`` drives the
  train step's noise; ``data_seed`` orders the step's batches (numpy, per
  epoch). The run's one initialisation has its own key (``init_variables``).
  """
  dropout: jax.Array
  data_seed: tuple
  replay: jax.Array  # synthesis of old-class inputs (``inversion``)


class StepContext:
  """Data, class sequence and devices shared by every step of a run."""

  def __init__(self, config, source, groups, devices, vmap, teacher=None,
               teacher_model=None, class_names=None):
    self.config, self.source, self.groups = config, source, groups
    self.devices, self.vmap = devices, vmap
    self.dataset = source.info
    # A given C_A's metadata: its input spec and class names carry over to
    # every classifier the run saves.
    self.teacher = teacher
    self.class_names = class_names  # a name or None per class of the order
    # A foreign teacher's model (``models.foreign.FlaxClassifier``,
    # ``models.keras_model.KerasClassifier``): every model of the run is
    # that model with its head widened.
    self.foreign = (teacher_model if hasattr(teacher_model, "widened")
                    else None)
    self.head_path = self.foreign.head_path if self.foreign else HEAD
    self.order = [c for group in groups for c in group]
    self.mapping = classes.label_map(self.order, self.dataset.num_classes)
    self.num_outputs = len(self.order)
    # Many steps per dispatch (lax.scan) save the per-step dispatch; on
    # a CPU, XLA runs convolutions inside a loop about 18x slower than
    # alone (small CNN: 3.0 s against 0.17 s a step), so there only MLPs
    # take it.
    self.whole_epochs = (devices[0].platform != "cpu"
                         or config.model.name == "mlp")
    self._train_data = (None, None)  # (class ids, data) of the last request
    self._device_split = None  # the training split on the devices, once
    self._test_data = {}
    self._eval_steps = {}
    self._logits_fns = {}
    self._inits = {}  # adapter dim -> future of the initialisation
    self._background = futures.ThreadPoolExecutor(1, "cil_jax_prefetch")
    self._test_prefetch = None  # future of the whole order's test split
    self.train_steps = {}  # method structure -> (per-device step, tx)
    # Base structure -> KD part of the run's distilling method, which its
    # plain methods' steps share (step_build.structure); set by train.
    self.shared_kd = {}
    self.compiled_ahead = set()  # train steps compile_ahead has started
    self.replays = {}  # (step, previous model, settings) -> synthetic set

  @property
  def input_spec(self):
    """The input every model of the run takes (``cil_jax.classifier.input_spec``)."""
    if self.teacher is not None:
      return self.teacher["input"]
    return {"pixels": "stored", "normalization": "mean_std",
            "mean": list(self.dataset.mean), "std": list(self.dataset.std)}

  @property
  def precomputes_teacher_logits(self):
    """Whether a step gathers its teacher's logits, computed once, rather
    than running the teacher per batch (``fit``): training data on the
    devices, not augmented."""
    return (train_data.placement_of(self.source, self.config.dataset)
            == "device" and not self.dataset.augment)

  def num_seen(self, t):
    return sum(len(g) for g in self.groups[:t + 1])

  def num_old(self, t):
    return self.num_seen(t) - len(self.groups[t])

  def train_classes(self, t, scratch):
    """The class ids step ``t`` trains on: all seen classes from scratch,
    else only group ``t`` (no old-class example, ever)."""
    groups = self.groups[:t + 1] if scratch else [self.groups[t]]
    return [c for g in groups for c in g]

  @property
  def layout(self):
    """``(head_path, layers in forward order)`` of a foreign module, for
    the layer presets; ``None`` for cil_jax's own models."""
    return (self.head_path, self.foreign.layers) if self.foreign else None

  def model(self, num_classes, adapter_dim, frozen_layers=(), dtype=None,
            inference=False):
    """The run's model, computing in ``config.train.dtype`` unless
    ``dtype`` says otherwise. A foreign model runs in its own dtypes
    (``config_check.validate_steps`` refuses bfloat16 for it), and with
    ``inference`` in its inference mode even when trained (its BatchNorm
    layers cannot be frozen one by one as ``frozen_layers`` freezes
    cil_jax's own)."""
    if self.foreign is not None:
      model = self.foreign.widened(num_classes)
      return model.in_inference_mode() if inference else model
    return build_model(self.config.model, num_classes, adapter_dim,
                       frozen_layers, dtype or self.config.train.dtype)

  def abstract(self, num_classes, adapter_dim):
    """Shapes of the variables of a model with ``num_classes`` outputs."""
    return abstract_variables(self.model(num_classes, adapter_dim),
                              self.dataset.input_shape)

  def keys(self, t, method):
    """Keys of step ``t`` of ``method``, derived on the host (numpy's
    SeedSequence) so no key-splitting program compiles. Each is the raw
    threefry key ``jax.random.PRNGKey(s)`` of a 32-bit seed ``s``,
    ``[0, s]``, built in numpy: ``PRNGKey`` compiles two small programs
    (about 0.2 s at a run's first step)."""
    data_seed = (self.config.seed, t, method.index)
    def key(purpose):
      seed = np.random.SeedSequence([*data_seed, purpose])
      return np.array([0, seed.generate_state(1)[0]], np.uint32)
    return StepKeys(key(_DROPOUT), data_seed, key(_REPLAY))

  def init_variables(self, adapter_dim):
    """The run's one initialisation of the sequence-wide model: a step from
    scratch starts from it, and a later step takes its new classes' head
    columns from it (one draw per run, so methods start alike)."""
    self.prefetch_init(adapter_dim)
    with timer.section("setup"):
      return self._inits[adapter_dim].result()

  def prefetch_init(self, adapter_dim=0):
    """Starts ``init_variables(adapter_dim)`` on a background thread (once):
    its compilation, about 0.5 s for the Fashion-MNIST MLP on a CPU,
    overlaps the work a run does before its first step needs it."""
    if adapter_dim not in self._inits:
      self._inits[adapter_dim] = self._background.submit(self._init,
                                                         adapter_dim)

  def prefetch_test(self):
    """Starts preparing the whole order's test split (``test_split``) on
    the background thread, after the initialisation, when the split is in
    memory: normalising Fashion-MNIST's 10,000 test images takes about
    0.2 s of a 2-core CPU, which then overlaps the first step's compile
    instead of delaying its first evaluation. The raw arrays are read
    here, on the calling thread."""
    every = tuple(self.order)
    if (self._test_prefetch is None and every not in self._test_data
        and self.source.arrays("test") is not None):
      self._test_prefetch = self._background.submit(
          pipeline.filtered, self.source, "test", every, self.mapping)

  def prefetch_checkpointing(self):
    """Imports orbax (``checkpoint.ocp``, 0.15-0.25 s of a 2-core CPU) on
    the background thread, after the initialisation and the test split,
    while the first train program compiles: imported on first use, it
    would delay the first step, whose checkpoint manager is made after
    the program is compiled."""
    self._background.submit(checkpoint.ocp)

  def _init(self, adapter_dim):
    model = self.model(self.num_outputs, adapter_dim)
    # The initialisation draws from JAX's "rbg" generator: deterministic on
    # a platform like the default one, and its init program compiles about
    # 4x faster on a CPU (0.5 s against 2.2 s for the Fashion-MNIST MLP).
    # Made here, so the key's small programs compile off the main thread.
    key = jax.random.key(self.config.seed, impl="rbg")
    return jax.device_get(jax.jit(model.init)(
        key,
        np.zeros((1, *self.dataset.input_shape), np.float32)))

  def train_data(self, class_ids):
    """The training data of ``class_ids``, kept while steps reuse it."""
    key, data = self._train_data
    if key != class_ids:
      start = time.perf_counter()
      if (self._device_split is None and train_data.placement_of(
          self.source, self.config.dataset) == "device"):
        self._device_split = train_data.device_split_of(
            self.source, self.mapping, self.devices)
      data = train_data.make_train_data(
          self.source, class_ids, self.mapping, self.config.dataset,
          self.config.train.batch_size, self.devices, self._device_split)
      timer.add("train_data", time.perf_counter() - start)
      self._train_data = (class_ids, data)
    return data

  def evaluate(self, variables, t, adapter_dim, class_means=None):
    """Test metrics after step ``t`` over all classes seen by then, of a
    sequence-wide model's ``variables``: its head's argmax, or with
    ``class_means`` (``[outputs, d]``) the nearest mean of exemplars
    (iCaRL's classifier)."""
    num_seen = self.num_seen(t)
    nme = class_means is not None
    if (adapter_dim, nme) not in self._eval_steps:  # one compile each
      apply = self.model(self.num_outputs, adapter_dim).apply
      self._eval_steps[adapter_dim, nme] = (
          ts.make_nme_eval_step(apply) if nme else ts.make_eval_step(apply))
    step = self._eval_steps[adapter_dim, nme]
    if nme:
      def eval_step(v, images, num_seen):
        return step(v, images, class_means, num_seen)
    else:
      eval_step = step
    start = time.perf_counter()
    matrix = evaluate.confusion(
        lambda v, images: eval_step(v, images, num_seen),
        parallel.replicate(variables, self.devices),
        self.test_split(num_seen), len(self.order),
        self.config.train.eval_batch_size, len(self.devices))
    timer.add("eval", time.perf_counter() - start)
    # The confusion matrix over the seen classes (rows: true class, columns:
    # predicted, in class order) is kept for plots.
    return {**evaluate.step_metrics(np.diag(matrix), matrix.sum(axis=1),
                                    [len(g) for g in self.groups[:t + 1]]),
            "confusion": matrix[:num_seen, :num_seen].tolist()}

  def logits_fn(self, adapter_dim):
    """The jitted inference logits of the sequence-wide model, one per
    structure (``equivalence.logits_fn``), in float32 whatever
    ``config.train.dtype``: the checks they serve test the models'
    structure to float32 rounding."""
    if adapter_dim not in self._logits_fns:
      self._logits_fns[adapter_dim] = equivalence.logits_fn(
          self.model(self.num_outputs, adapter_dim, dtype="float32").apply)
    return self._logits_fns[adapter_dim]

  def test_split(self, num_classes):
    """The test examples of the first ``num_classes`` classes of the order,
    in split order, kept for later steps. A split in memory is decoded and
    normalised once, for the whole order, and each step takes its classes'
    rows (labels are positions in the order); a streamed one is filtered
    per request."""
    test_classes = tuple(self.order[:num_classes])
    if test_classes not in self._test_data:
      if self.source.arrays("test") is None:
        self._test_data[test_classes] = pipeline.filtered(
            self.source, "test", test_classes, self.mapping)
      else:
        every = tuple(self.order)
        if every not in self._test_data and self._test_prefetch is not None:
          self._test_data[every] = self._test_prefetch.result()
        if every not in self._test_data:
          self._test_data[every] = pipeline.filtered(
              self.source, "test", every, self.mapping)
        whole = self._test_data[every]
        keep = whole.label < num_classes
        self._test_data[test_classes] = pipeline.Examples(
            image=whole.image[keep], label=whole.label[keep])
    return self._test_data[test_classes]

  def test_images(self, num_classes, limit=4096):
    """Normalised test images of the first ``num_classes`` classes of the
    order (at most ``limit``), for checks at step start."""
    data = self.test_split(num_classes)
    if isinstance(data, pipeline.Examples):
      return data.image[:limit]
    return np.stack([np.asarray(e["image"]) for e in data.take(limit)])

  def train_examples(self, class_ids):
    """This process's training examples of ``class_ids`` (from the cached
    class counts, without loading any data)."""
    counts = self.dataset.class_counts["train"]
    return int(np.asarray(counts)[np.asarray(class_ids)].sum())
