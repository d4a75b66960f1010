"""CIFAR-100, class-incremental learning with an exemplar memory (these
methods STORE OLD DATA) in the protocols of LUCIR (Hou et al. CVPR 2019)
and PODNet (Douillard et al. ECCV 2020): ResNet-32, the class order
shuffled with seed 1993 (iCaRL's and PyCIL's), 20 exemplars per class
chosen by herding (2,000 at the end), SGD at 0.1 with momentum 0.9,
weight decay 5e-4, batch 128, 160 epochs per step with the rate divided
by 10 at epochs 80 and 120 (LUCIR's schedule).

The protocol is the argument, ``[base+]STEPSxCLASSES`` as in this
project's "5x2" (5 steps of 2 classes), the classes adding up to 100:

- ``50+5x10``: 50 base classes, then 5 steps of 10 (LUCIR's "5 phases",
  PyCIL's B50-Inc10, ``configs/cifar100.py``'s);
- ``50+10x5``: 50 base classes, then 10 steps of 5 (LUCIR's and PODNet's
  "10 phases"); ``50+25x2`` the 25 phases;
- ``10x10``: 10 steps of 10 classes from scratch (iCaRL's, and PyCIL's
  "B0 Inc10").

``er``, ``icarl`` and ``bic`` run on a linear head; ``,lucir`` after the
protocol runs ``lucir`` instead, on LUCIR's cosine head (its sigma starts
at 1 as in LUCIR's code, which trains at this rate), with its own C_A.
Not run on this project's CPU machine (no CIFAR-100 there); the whole path
is tested on tfds.testing.mock_data (tests/test_tfds.py). Differences from
the papers: memory rows come beside every batch (``memory.batch_size``)
rather than mixed into the training set, unaugmented; LUCIR's
class-balanced fine-tuning and imprinted new-class weights are not done.

  python -m cil_jax.main --config configs/cifar100_methods.py:50+5x10 \\
      --workdir DIR
  python -m cil_jax.main --config configs/cifar100_methods.py:50+10x5,lucir \\
      --workdir DIR
"""

import re

from cil_jax import config_files

cifar100 = config_files.sibling(__file__, "cifar100")

_PROTOCOL = re.compile(r"(?:(\d+)\+)?(\d+)x(\d+)")


def groups(protocol):
  """The class groups of ``[base+]STEPSxCLASSES`` (class positions in the
  shuffled order)."""
  match = _PROTOCOL.fullmatch(protocol)
  if not match:
    raise ValueError(f"configs/cifar100_methods.py:{protocol}: the protocol "
                     f"is [base+]STEPSxCLASSES, e.g. 50+5x10 or 10x10.")
  base, steps, size = (int(g) if g else 0 for g in match.groups())
  if base + steps * size != 100 or not steps or not size:
    raise ValueError(f"configs/cifar100_methods.py:{protocol}: its classes "
                     f"add up to {base + steps * size}, not CIFAR-100's 100; "
                     f"use e.g. 50+5x10, 50+10x5 or 10x10.")
  starts = ([0] if base else []) + list(range(base, 100, size))
  ends = starts[1:] + [100]
  return tuple(tuple(range(s, e)) for s, e in zip(starts, ends))


def get_config(protocol="50+5x10"):
  protocol, _, variant = protocol.partition(",")
  if variant not in ("", "lucir"):
    raise ValueError(f"configs/cifar100_methods.py:{protocol},{variant}: "
                     f"after the protocol only ',lucir' may follow.")
  config = cifar100.get_config()  # ResNet-32, class order seed 1993
  config.classes.groups = groups(protocol)
  config.methods = "er,icarl,bic"
  if variant == "lucir":
    config.methods = "lucir"
    config.model.cosine_head = True
    config.model.cosine_scale_init = 1.0
  config.memory.per_class = 20
  config.memory.selection = "herding"
  config.optim.nesterov = False
  config.optim.warmup_steps = 0
  config.optim.schedule = "step"
  config.optim.step_boundaries = (0.5, 0.75)
  config.optim.step_factor = 0.1
  config.train.epochs = 160
  config.train.checkpoint_every_epochs = 10
  return config
