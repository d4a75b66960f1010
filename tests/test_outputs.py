"""What a run leaves to look at: PNGs (``cil_jax.plot``), TensorBoard event
files (``cil_jax.tensorboard``) and the confusion matrices behind them.

One real run on digits (eps_kd, finetune, joint; 2 epochs a step) serves
the run tests; the sweep figure reads a sweep directory written here.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import collections
from matplotlib import image as mpl_image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from cil_jax import plot
from cil_jax import train
from cil_jax.plot import run_figures
from cil_jax.plot import sweep_figures
from cil_jax.sweep import table
from tests.helpers import small_config

METHODS = ("eps_kd", "finetune", "joint")
EPOCHS = 3
TRAIN_STEPS_PER_EPOCH = 10  # 672 new-class digits, full batches of 64


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("outputs") / "run")
  config = small_config(**{
      "methods": ",".join(METHODS), "train.epochs": EPOCHS,
      "outputs.tensorboard": True})
  return workdir, train.run(config, workdir)


def _pixels(path):
  """The PNG as an [h, w, 3] float array in [0, 1]."""
  return mpl_image.imread(path)[..., :3]


def _assert_drawn(path, min_width):
  pixels = _pixels(path)
  height, width, _ = pixels.shape
  assert width >= min_width and height >= 300, (path, pixels.shape)
  # Not blank: a real share of non-white pixels, many distinct colours.
  assert np.mean(pixels.min(axis=-1) < 0.9) > 0.02, path
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100, path


def test_run_writes_its_plots_at_the_end(run):
  workdir, _ = run
  plot_dir = os.path.join(workdir, "plots")
  assert sorted(os.listdir(plot_dir)) == [
      "accuracy_matrix.png", "accuracy_per_step.png", "confusion.png"]
  for name in os.listdir(plot_dir):
    # A panel per method (or per accuracy) at 3.6 in and 110 dpi.
    _assert_drawn(os.path.join(plot_dir, name), min_width=3 * 3.6 * 110)


def test_figures_show_every_method_with_the_recorded_numbers(run):
  _, results = run
  results = json.loads(json.dumps(results))  # as read from results.json
  heatmaps = [ax for ax in run_figures.accuracy_matrices(results).axes
              if ax.images]
  assert [ax.get_title() for ax in heatmaps] == list(METHODS)
  for ax, name in zip(heatmaps, METHODS):
    shown = np.ma.filled(ax.images[0].get_array(), np.nan)
    matrix = results["methods"][name]["accuracy_matrix"]
    np.testing.assert_allclose(shown[1], 100 * np.array(matrix[1]))
    assert np.isnan(shown[0, 1])  # group 1 not yet seen after step 0
  panels = run_figures.accuracy_per_step(results).axes
  assert [ax.get_title() for ax in panels] == [
      "old classes", "new classes", "all seen classes"]
  for ax, key in zip(panels, ("acc_old", "acc_new", "acc_all")):
    assert len(ax.lines) == len(METHODS)
    for line, name in zip(ax.lines, METHODS):
      assert line.get_label() == name
      assert line.get_ydata()[1] == pytest.approx(
          100 * results["methods"][name]["steps"][1][key])
  confusions = [ax for ax in run_figures.confusion_matrices(results).axes
                if ax.images]
  assert len(confusions) == len(METHODS)
  for ax in confusions:
    shares = ax.images[0].get_array()
    assert shares.shape == (10, 10)
    np.testing.assert_allclose(shares.sum(axis=1), 100)  # rows: true class


def test_confusion_matrix_agrees_with_the_accuracies(run):
  _, results = run
  for name in METHODS:
    final = results["methods"][name]["steps"][-1]
    confusion = np.array(final["confusion"])
    assert confusion.shape == (10, 10)
    assert confusion.sum() == final["num_test_examples"] == 450
    assert np.trace(confusion) / confusion.sum() == pytest.approx(
        final["acc_all"])
    assert (np.trace(confusion[:5, :5]) / confusion[:5].sum()
            == pytest.approx(final["acc_old"]))
  # Fine-tuning on 5-9 alone predicts old digits as new ones.
  finetune = np.array(results["methods"]["finetune"]["steps"][-1]["confusion"])
  assert finetune[:5, 5:].sum() > 0.8 * finetune[:5].sum()
  base = results["methods"]["eps_kd"]["steps"][0]
  assert np.array(base["confusion"]).shape == (5, 5)


def _scalars(logdir):
  events = event_accumulator.EventAccumulator(
      logdir, size_guidance={event_accumulator.TENSORS: 0})
  events.Reload()
  # Scalars only: the hparams plugin's tags hold protos, not numbers.
  return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto)))
                for e in events.Tensors(tag)]
          for tag in events.Tags()[event_accumulator.TENSORS]
          if not tag.startswith("_hparams_/")}


def _tags(logdir):
  events = event_accumulator.EventAccumulator(logdir)
  events.Reload()
  return events.Tags()[event_accumulator.TENSORS]


def test_tensorboard_has_training_and_test_scalars(run):
  workdir, results = run
  train_run = _scalars(os.path.join(workdir, "eps_kd", "step_1",
                                    "tensorboard"))
  updates = [TRAIN_STEPS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
  for tag in ("train/loss", "train/ce", "train/kd", "train/accuracy",
              "train/grad_norm", "train/eps", "train/learning_rate",
              "steps_per_sec"):
    assert [step for step, _ in train_run[tag]] == updates, tag
  # Hyperparameters (eps and T), once.
  assert _tags(os.path.join(workdir, "eps_kd", "step_1", "tensorboard")).count(
      "_hparams_/session_start_info") == 1
  values = {tag: np.array([v for _, v in points])
            for tag, points in train_run.items()}
  np.testing.assert_allclose(values["train/eps"], 0.5)  # auto: 5 / 10
  # The loss is the eps-mix of the recorded CE and KD.
  np.testing.assert_allclose(
      values["train/loss"],
      0.5 * values["train/ce"] + 0.5 * values["train/kd"], rtol=1e-5)
  assert values["train/loss"][1] < values["train/loss"][0]
  assert np.all((values["train/accuracy"] > 0.3)
                & (values["train/accuracy"] <= 1))
  # Cosine decay from 1e-3 to 0 over the step's 30 updates.
  assert 0 < values["train/learning_rate"][1] < values[
      "train/learning_rate"][0] < 1e-3
  assert np.all(values["steps_per_sec"] > 0)
  # The mean gradient norm of the updated parameters: finite and positive.
  assert np.all(np.isfinite(values["train/grad_norm"])
                & (values["train/grad_norm"] > 0))
  base = _scalars(os.path.join(workdir, "base", "step_0", "tensorboard"))
  np.testing.assert_allclose([v for _, v in base["train/kd"]], 0)
  for name in METHODS:
    test_run = _scalars(os.path.join(workdir, name, "tensorboard"))
    steps = results["methods"][name]["steps"]
    assert test_run["test/acc_all"] == [
        (s["step"], pytest.approx(s["acc_all"])) for s in steps]
    assert test_run["test/acc_old"] == [
        (1, pytest.approx(steps[1]["acc_old"]))]
    assert "_hparams_/session_start_info" in _tags(  # the config
        os.path.join(workdir, name, "tensorboard"))


def _cli(*args):
  return subprocess.run([sys.executable, "-m", "cil_jax.plot", *args],
                        capture_output=True, text=True, env=os.environ,
                        check=False)


def test_plot_command_redraws_a_run_and_names_a_wrong_dir(run, tmp_path):
  workdir, _ = run
  before = _pixels(os.path.join(workdir, "plots", "confusion.png"))
  os.remove(os.path.join(workdir, "plots", "confusion.png"))
  done = _cli(workdir)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.count("wrote ") == 3
  np.testing.assert_array_equal(
      _pixels(os.path.join(workdir, "plots", "confusion.png")), before)
  wrong = _cli(str(tmp_path))
  assert wrong.returncode == 1
  assert "has neither results.json nor sweep.json" in wrong.stderr
  assert "python -m cil_jax.main" in wrong.stderr


def test_outputs_off_writes_no_plots_nor_event_files(tmp_path):
  workdir = tmp_path / "quiet"
  train.run(small_config(**{"methods": "finetune", "train.epochs": 1,
                            "model.hidden_sizes": (16,),
                            "outputs.plots": False,
                            "outputs.tensorboard": False}), str(workdir))
  written = [p.name for p in workdir.rglob("*")]
  assert "results.json" in written
  assert "plots" not in written and "tensorboard" not in written


def _sweep_dir(root):
  """A sweep directory as ``python -m cil_jax.sweep`` leaves it: two
  presets x three eps x two seeds of eps_kd, and finetune per seed."""
  runs = {}
  rng = np.random.default_rng(0)
  for seed in (0, 1):
    for preset, slope in (("all", 0.4), ("head", -0.2)):
      for eps in ("0.2", "0.5", "0.8"):
        name = f"eps={eps}_layers={preset}_seed={seed}"
        runs[name] = {"seed": seed, "eps_kd.layers": preset,
                      "eps_kd.eps": eps}
        acc = 0.5 + slope * float(eps) + 0.01 * rng.normal()
        _results(root / name, "eps_kd", acc)
    name = f"methods=finetune_seed={seed}"
    runs[name] = {"seed": seed, "methods": "finetune"}
    _results(root / name, "finetune", 0.3 + 0.02 * seed)
  (root / "sweep.json").write_text(json.dumps({"runs": runs}))
  return root


def _results(run_dir, method, acc):
  run_dir.mkdir(parents=True)
  metrics = {"final_acc_all": acc, "final_acc_old": acc, "final_acc_new": acc,
             "average_incremental_accuracy": acc, "forgetting": 0.1}
  (run_dir / "results.json").write_text(
      json.dumps({"methods": {method: metrics}}))


def test_sweep_plot_has_a_panel_per_preset_with_seed_spread(tmp_path):
  sweep_dir = _sweep_dir(tmp_path / "sweep")
  rows, missing = table.load_rows(str(sweep_dir))
  assert not missing and len(rows) == 14
  fig = sweep_figures.eps_by_preset(rows)
  assert [ax.get_title() for ax in fig.axes] == ["layers = all",
                                                 "layers = head"]
  for ax in fig.axes:
    preset = ax.get_title().split()[-1]
    curve, reference = ax.lines
    assert list(curve.get_xdata()) == [0.2, 0.5, 0.8]
    expected = [100 * np.mean([r["final_acc_all"] for r in rows
                               if r.get("eps_kd.layers") == preset
                               and r["eps_kd.eps"] == eps])
                for eps in ("0.2", "0.5", "0.8")]
    np.testing.assert_allclose(curve.get_ydata(), expected)
    assert reference.get_label() == "finetune"
    np.testing.assert_allclose(reference.get_ydata(), 31)  # mean of 30, 32
    # Every seed's point: three eps values x two seeds.
    assert sum(len(c.get_offsets()) for c in ax.collections
               if isinstance(c, collections.PathCollection)) == 6
  paths = plot.write_plots(str(sweep_dir))
  assert paths == [str(sweep_dir / "plots" / "eps_by_preset.png")]
  _assert_drawn(paths[0], min_width=2 * 4.2 * 110)


def test_sweep_plot_without_an_eps_grid_says_what_is_missing(tmp_path):
  sweep_dir = tmp_path / "refs_only"
  _results(sweep_dir / "methods=finetune", "finetune", 0.3)
  (sweep_dir / "sweep.json").write_text(json.dumps(
      {"runs": {"methods=finetune": {"methods": "finetune"}}}))
  with pytest.raises(ValueError, match="needs a sweep over eps_kd.eps"):
    plot.write_plots(str(sweep_dir))


def test_vmapped_members_each_write_their_own_curves(tmp_path):
  config = small_config(**{"methods": "eps_kd", "train.epochs": 2,
                           "model.hidden_sizes": (32,),
                           "outputs.plots": False,
                           "outputs.tensorboard": True})
  members = {str(tmp_path / f"eps={eps}"): {"eps_kd.eps": str(eps)}
             for eps in (0.2, 0.8)}
  train.run_members(config, members, vmap=True)
  for workdir, overrides in members.items():
    eps = float(overrides["eps_kd.eps"])
    curves = _scalars(os.path.join(workdir, "eps_kd", "step_1",
                                   "tensorboard"))
    values = {tag: np.array([v for _, v in points])
              for tag, points in curves.items()}
    np.testing.assert_allclose(values["train/eps"], eps)
    np.testing.assert_allclose(
        values["train/loss"],
        (1 - eps) * values["train/ce"] + eps * values["train/kd"], rtol=1e-5)
    # C_A was trained once, in the first member's workdir, and copied.
    assert os.path.isdir(os.path.join(workdir, "base", "step_0",
                                      "tensorboard"))
