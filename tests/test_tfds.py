"""The TFDS code path: mocked CIFAR configs end to end, and the real
Fashion-MNIST built offline from Debian's files."""

import dataclasses
import itertools
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cil_jax import evaluate
from cil_jax.memory import exemplars
from cil_jax import parallel
from cil_jax import train
from cil_jax.data import cache
from cil_jax.data import classes
from cil_jax.data import fashion_mnist
from cil_jax.data import pipeline
from cil_jax.data import source
from cil_jax.data import tfds_build
from cil_jax.data import train_data
from cil_jax import config_files

cifar10 = config_files.from_checkout("cifar10")
cifar100 = config_files.from_checkout("cifar100")
cifar100_data_free = config_files.from_checkout("cifar100_data_free")
cifar100_methods = config_files.from_checkout("cifar100_methods")
fashion_mnist_config = config_files.from_checkout("fashion_mnist")


def _tiny(config, tmp_path, methods):
  """A CIFAR config made small: two steps, a tiny ResNet, one epoch, no
  TFDS data_dir (the tests mock the data)."""
  config.dataset.data_dir = str(tmp_path / "no_tfds_here")
  config.model.resnet_depth = 8  # the configs' ResNets, made small
  config.model.resnet_width = 4
  config.classes.groups = config.classes.groups[:2]
  config.methods = methods
  config.train.epochs = 1
  config.train.batch_size = 16
  config.train.eval_batch_size = 64
  config.train.num_devices = 1
  config.optim.warmup_steps = 0
  return config


@pytest.mark.parametrize("get_config, num_classes", [
    (cifar10.get_config, 10), (cifar100.get_config, 100)])
def test_cifar_configs_run_one_step_end_to_end_on_mock_data(
    tmp_path, get_config, num_classes):
  config = _tiny(get_config(), tmp_path, "eps_kd")
  num_examples = 10 * num_classes  # about 10 examples of each class
  with tfds.testing.mock_data(num_examples=num_examples):
    results = train.run(config, str(tmp_path / "run"))
  steps = results["methods"]["eps_kd"]["steps"]
  groups = results["class_sequence"]
  assert [len(g) for g in groups] == [len(g) for g in config.classes.groups]
  # Mock labels are random: the counts come from the data, so check the
  # bookkeeping is consistent with the class groups instead.
  assert steps[1]["num_old"] == len(groups[0])
  assert 0 < steps[1]["num_train_examples"] < num_examples
  assert steps[1]["num_test_examples"] > steps[0]["num_test_examples"]
  assert 0.0 <= steps[1]["acc_all"] <= 1.0


def test_cifar100_data_free_config_runs_replay_on_mock_data(tmp_path):
  config = cifar100_data_free.get_config("20")
  assert len(config.classes.groups) == 20
  assert {len(g) for g in config.classes.groups} == {5}
  config = _tiny(config, tmp_path, "df_replay")
  config.df_replay.samples = 32
  config.df_replay.head_finetune_steps = 2
  config.df_replay.inversion.steps = 3
  config.df_replay.inversion.batch_size = 16
  with tfds.testing.mock_data(num_examples=1500):
    results = train.run(config, str(tmp_path / "run"))
  step = results["methods"]["df_replay"]["steps"][1]
  assert step["num_old"] == 5 and step["num_new"] == 5
  assert 0.0 <= step["acc_all"] <= 1.0
  # 32 synthetic 32x32x3 inputs, and their grid for a user to look at.
  assert set(step["replay"]) >= {"teacher_confidence", "target_hit"}
  assert os.path.getsize(tmp_path / "run" / "df_replay" / "step_1" /
                         "replay_samples.png") > 5000
  with pytest.raises(ValueError, match="must divide 100"):
    cifar100_data_free.get_config("7")


def test_cifar100_methods_config_runs_lucir_on_mock_data(tmp_path,
                                                         monkeypatch):
  """One tiny run (50 base classes, then 10, LUCIR on its cosine head);
  the other protocols' groups and the linear-head variant's methods."""
  for protocol, sizes in (("50+5x10", [50] + [10] * 5),
                          ("50+10x5", [50] + [5] * 10),
                          ("10x10", [10] * 10)):
    config = cifar100_methods.get_config(protocol)
    assert [len(g) for g in config.classes.groups] == sizes
    assert config.methods == "er,icarl,bic" and not config.model.cosine_head
  for bad in ("50+5x5", "5by10", "10x10,er"):
    with pytest.raises(ValueError, match="cifar100_methods"):
      cifar100_methods.get_config(bad)
  config = cifar100_methods.get_config("50+5x10,lucir")
  assert config.model.cosine_head and config.memory.per_class == 20
  config = _tiny(config, tmp_path, "lucir")
  # Herding embeds each class's few mock rows in chunks of 1,024 rows:
  # smaller ones for these tiny classes.
  monkeypatch.setattr(exemplars, "_CHUNK", 32)
  with tfds.testing.mock_data(num_examples=1000):
    results = train.run(config, str(tmp_path / "run"))
  step = results["methods"]["lucir"]["steps"][1]
  assert step["num_old"] == 50 and step["num_new"] == 10
  # At most 20 exemplars of each old class (mock labels are random: some
  # have fewer rows), then of each seen class.
  assert 50 <= step["memory_rows"] <= 20 * 50
  assert 60 <= step["memory_size"] <= 20 * 60
  assert 0.0 <= step["acc_all"] <= 1.0


@pytest.fixture(scope="module")
def fmnist_source(tmp_path_factory):
  if not fashion_mnist.has_debian_files():
    pytest.fail("Fashion-MNIST needs Debian's dataset-fashion-mnist: "
                "apt-get install -y dataset-fashion-mnist")
  config = fashion_mnist_config.get_config().dataset
  config.data_dir = str(tmp_path_factory.mktemp("tfds"))
  return source.Source(config)


def test_fashion_mnist_builds_offline_with_full_splits(fmnist_source):
  info = fmnist_source.info
  assert info.num_classes == 10 and info.input_shape == (28, 28, 1)
  np.testing.assert_array_equal(info.class_counts["train"], [6000] * 10)
  np.testing.assert_array_equal(info.class_counts["test"], [1000] * 10)
  # Fashion-MNIST's pixel mean is about 72.9 of 255 (first 10k images).
  assert 70 < info.mean[0] < 76
  # The label names, cached, flow into every classifier's metadata.
  assert info.class_names[:2] == ("T-shirt/top", "Trouser")
  assert info.class_names[8:] == ("Bag", "Ankle boot")


def test_the_decoded_cache_is_read_without_tfds(fmnist_source, monkeypatch):
  assert sorted(os.listdir(fmnist_source.cache_dir)) == [
      "info.json", "test.npz", "train.npz"]
  assert fmnist_source.cache_dir == os.path.join(
      fmnist_source.config.data_dir, "cil_jax", "fashion_mnist", "train,test",
      "0of1")

  def no_build(*args):
    raise AssertionError(f"TFDS was asked to build {args}")

  monkeypatch.setattr(tfds_build, "build", no_build)
  monkeypatch.setattr(tfds_build, "streamed_split", no_build)
  cached = source.Source(fmnist_source.config)
  np.testing.assert_equal(dataclasses.asdict(cached.info),
                          dataclasses.asdict(fmnist_source.info))
  for which in ("train", "test"):
    for got, want in zip(cached.arrays(which), fmnist_source.arrays(which)):
      assert got.dtype == want.dtype and got.dtype in (np.uint8, np.int32)
      np.testing.assert_array_equal(got, want)


def test_a_damaged_cache_names_its_file_and_the_fix(fmnist_source, tmp_path):
  config = _dataset_config(fmnist_source, "auto")
  config.data_dir = str(tmp_path)
  cache_dir = cache.directory(config, 0, 1)
  shutil.copytree(fmnist_source.cache_dir, cache_dir)
  with open(os.path.join(cache_dir, "train.npz"), "r+b") as f:
    f.truncate(1000)
  with pytest.raises(ValueError, match=r"train\.npz cannot be read.*delete"):
    source.Source(config).arrays("train")
  with open(os.path.join(cache_dir, "info.json"), "w") as f:
    f.write("{")
  with pytest.raises(ValueError, match=r"info\.json is damaged.*delete"):
    source.Source(config)


def test_new_step_batches_never_hold_old_classes(fmnist_source):
  order = [3, 8, 1, 0, 6, 2, 9, 4, 5, 7]
  mapping = classes.label_map(order, 10)
  new_classes = [2, 9, 4, 5, 7]  # positions 5..9
  data = train_data.make_train_data(
      fmnist_source, new_classes, mapping,
      _dataset_config(fmnist_source, "host"), 1000, jax.local_devices()[:8])
  assert data.num_examples == 30000
  seen = np.zeros(10, np.int64)
  for batch in data.epoch([0], 1):
    seen += np.bincount(np.asarray(batch["label"]).reshape(-1), minlength=10)
  assert seen[:5].sum() == 0
  assert seen[5:].sum() == 30000  # 30 full batches of 1000
  assert seen[5:].min() > 5500  # every new class present, shuffled evenly


def test_evaluation_counts_equal_the_test_split(fmnist_source):
  mapping = classes.label_map(list(range(10)), 10)
  base = pipeline.filtered(fmnist_source, "test", list(range(7)), mapping)

  def predict_zero(variables, images):
    del variables
    return np.zeros(images.shape[:2], np.int32)

  correct, total = evaluate.class_counts(predict_zero, None, base, 10,
                                         batch_size=768, num_devices=8)
  np.testing.assert_array_equal(total, [1000] * 7 + [0] * 3)
  np.testing.assert_array_equal(correct, [1000] + [0] * 9)


@pytest.mark.parametrize("placement", ["host", "device"])
def test_same_seed_same_batches(fmnist_source, placement):
  mapping = classes.label_map(list(range(10)), 10)
  config = _dataset_config(fmnist_source, placement)

  data = train_data.make_train_data(fmnist_source, [0, 1], mapping, config,
                                    256, jax.local_devices()[:2])
  assert data.mode == placement

  make_batch = jax.pmap(data.batch_fn, axis_name=parallel.BATCH_AXIS)

  def first_batches(seed):
    feeds = itertools.islice(data.epoch(seed, 1), 3)
    return [np.asarray(make_batch(data.resident, feed)["image"])
            for feed in feeds]

  a, b, c = first_batches([0]), first_batches([0]), first_batches([1])
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not all(np.array_equal(x, z) for x, z in zip(a, c))


def _dataset_config(src, placement):
  config = fashion_mnist_config.get_config().dataset
  config.data_dir = src.config.data_dir
  config.placement = placement
  return config
