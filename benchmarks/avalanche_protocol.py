"""Issue 11's protocol in Avalanche 0.6, for the paired comparison with cil_jax.

  AVALANCHE_PYTHON avalanche_protocol.py --strategy lwf --out avl.json

Runs in a separate environment with torch and avalanche-lib (README.md in
this folder); it imports nothing of cil_jax. Split Fashion-MNIST from
Debian's IDX files (no download), 5 experiences of 2 classes in order 0..9,
MLP 784-400-400-10 (SimpleMLP, no dropout), Adam 1e-3, batch 128, 5 epochs
per experience, CPU. ``--strategy``: naive, lwf (alpha 1, T 2), joint (one
training on all ten classes), all (the three in turn, in one process) or
none (imports and data only: an unmeasured warm-up of the file cache).
After each experience the strategy is evaluated on the test data of the
classes seen so far, as cil_jax evaluates after each step; the last figure
is the final accuracy on all ten classes.
"""

import argparse
import gzip
import importlib.util
import json
import os
import re
import time

_START = time.perf_counter()

# pylint: disable=g-import-not-at-top  (the clock above includes imports)
import numpy as np
import torch
from torch import nn

_TORCHVISION_STUBS = None


def _let_torchvision_import_without_its_ops():
  """Lets PyPI's torchvision import beside a CPU-only torch wheel.

  PyPI's torchvision is built against PyPI's CUDA torch: beside the CPU
  wheel of the same release its compiled ops (_C.so) fail to load, and its
  import then stops at the first op it registers a fake kernel for
  ("operator torchvision::nms does not exist"). Avalanche imports
  torchvision, but this protocol calls none of those detection ops, so
  declaring the two that torchvision registers unconditionally suffices.
  Beside the CUDA torch the ops load, and nothing is declared.
  """
  global _TORCHVISION_STUBS
  # Its version file names the CUDA build it was compiled for ("+cu130");
  # the CPU torch has no CUDA version. (Importing torchvision to ask would
  # fail the same way.)
  version_file = os.path.join(os.path.dirname(
      importlib.util.find_spec("torchvision").origin), "version.py")
  with open(version_file) as f:
    for_cuda = re.search(r"__version__ = '[^']*\+cu\d+'", f.read())
  if for_cuda and torch.version.cuda is None:
    _TORCHVISION_STUBS = torch.library.Library("torchvision", "DEF")
    for op in ("nms", "qnms"):
      _TORCHVISION_STUBS.define(
          f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")


_let_torchvision_import_without_its_ops()

# pylint: disable=g-import-not-at-top,wrong-import-position
import avalanche
from avalanche.benchmarks import nc_benchmark
from avalanche.evaluation.metrics import accuracy_metrics
from avalanche.models import SimpleMLP
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.supervised import JointTraining
from avalanche.training.supervised import LwF
from avalanche.training.supervised import Naive

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
STRATEGIES = ("naive", "lwf", "joint")
# cil_jax's normalisation: the mean and std of the raw pixels of the first
# 10,000 training images (cil_jax.data.cache.STATS_EXAMPLES).
STATS_EXAMPLES = 10_000


def read_idx(path, header_bytes):
  with gzip.open(path, "rb") as f:
    return np.frombuffer(f.read(), np.uint8, offset=header_bytes)


class _Tensors(torch.utils.data.TensorDataset):
  """A TensorDataset with ``targets``, the attribute Avalanche reads to
  split a dataset by class (as it reads torchvision's FashionMNIST's)."""

  def __init__(self, images, labels):
    super().__init__(images, labels)
    self.targets = labels


def fashion_mnist(data_dir):
  """Train and test datasets: flattened float32 images, normalised."""
  arrays = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    images = read_idx(os.path.join(data_dir, f"{prefix}-images-idx3-ubyte.gz"),
                      16).reshape(-1, 28 * 28)
    labels = read_idx(os.path.join(data_dir, f"{prefix}-labels-idx1-ubyte.gz"),
                      8)
    arrays[split] = images, labels
  stats = arrays["train"][0][:STATS_EXAMPLES].astype(np.float64)
  mean, std = stats.mean(), stats.std()
  datasets = []
  for images, labels in (arrays["train"], arrays["test"]):
    # In place, in float32: float64 or extra temporaries of the training
    # images (188 MB each in float32) would count in the peak RSS measured.
    x = images.astype(np.float32)
    x -= np.float32(mean)
    x /= np.float32(std)
    datasets.append(_Tensors(torch.from_numpy(x),
                             torch.from_numpy(labels.astype(np.int64))))
  return datasets


def make_strategy(name, args):
  model = SimpleMLP(num_classes=10, input_size=28 * 28, hidden_size=400,
                    hidden_layers=2, drop_rate=0.0)
  # No loggers: a progress bar or a text log would only add time.
  evaluator = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])
  common = dict(model=model,
                optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
                criterion=nn.CrossEntropyLoss(), train_mb_size=128,
                train_epochs=args.epochs, eval_mb_size=1024, device="cpu",
                evaluator=evaluator)
  if name == "naive":
    return Naive(**common)
  if name == "lwf":
    return LwF(alpha=1.0, temperature=2.0, **common)
  return JointTraining(**common)


def stream_accuracy(strategy, stream):
  metrics = strategy.eval(stream)
  (value,) = [v for k, v in metrics.items()
              if k.startswith("Top1_Acc_Stream/eval_phase/test_stream")]
  return round(100 * float(value), 2)


def run_strategy(name, benchmark, args):
  torch.manual_seed(args.seed)
  strategy = make_strategy(name, args)
  start = time.perf_counter()
  train, test = benchmark.train_stream, benchmark.test_stream
  if name == "joint":
    strategy.train(train)  # once, on all experiences' data together
    accuracies = [stream_accuracy(strategy, test)]
  else:
    accuracies = []
    for t, experience in enumerate(train):
      strategy.train(experience)
      accuracies.append(stream_accuracy(strategy, test[:t + 1]))
  return {"final_accuracy": accuracies[-1], "accuracy_after_each": accuracies,
          "seconds": round(time.perf_counter() - start, 2)}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--strategy", choices=(*STRATEGIES, "all", "none"),
                      required=True)
  parser.add_argument("--out", required=True, help="results JSON to write")
  parser.add_argument("--epochs", type=int, default=5,
                      help="per experience (the protocol: 5)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=DEBIAN_DIR)
  args = parser.parse_args()
  torch.manual_seed(args.seed)
  imports_s = time.perf_counter() - _START
  data_start = time.perf_counter()
  train_set, test_set = fashion_mnist(args.data_dir)
  benchmark = nc_benchmark(train_set, test_set, n_experiences=5,
                           task_labels=False, shuffle=False,
                           fixed_class_order=list(range(10)))
  data_s = time.perf_counter() - data_start
  names = {"all": STRATEGIES, "none": ()}.get(args.strategy, (args.strategy,))
  results = {"torch": torch.__version__, "avalanche": avalanche.__version__,
             "torchvision_ops_stubbed": _TORCHVISION_STUBS is not None,
             "threads": torch.get_num_threads(), "epochs": args.epochs,
             "imports_s": round(imports_s, 2), "data_s": round(data_s, 2),
             "strategies": {}}
  for name in names:
    results["strategies"][name] = run_strategy(name, benchmark, args)
    print(f"{name}: {results['strategies'][name]}", flush=True)
  results["wall_inside_s"] = round(time.perf_counter() - _START, 2)
  with open(args.out, "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
