"""Classifier and training checkpoints: exact round trips, and every bad
input (missing, damaged, incomplete) refused with an error naming it."""

import glob
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cil_jax.classifier import checkpoint
from cil_jax import jsonio

METADATA = {
    "model": {"name": "mlp", "hidden_sizes": [4]}, "adapter_dim": 0,
    "num_classes": 3, "class_order": [2, 0, 1], "input_shape": [2, 2, 1],
    "input": {"pixels": "stored", "normalization": "mean_std",
              "mean": [0.5], "std": [0.25]},
    "head_path": "head", "dataset": "digits"}

# Formats /1 and /2 held the normalisation as two keys.
V2_METADATA = {**{k: v for k, v in METADATA.items()
                  if k not in ("input", "head_path")},
               "input_mean": [0.5], "input_std": [0.25]}


def _variables(seed=0):
  rng = np.random.default_rng(seed)
  return {"params": {"dense": {"kernel": rng.normal(size=(4, 3)).astype(
      np.float32), "bias": np.float32([1e-30, -0.0, np.pi])}},
          "batch_stats": {"bn": {"mean": rng.normal(size=(3,))}}}


@pytest.fixture
def saved(tmp_path):
  path = str(tmp_path / "classifier")
  checkpoint.save_classifier(path, _variables(), METADATA)
  return path


def _truncate(pattern):
  paths = [p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p)]
  assert paths, pattern
  for p in paths:
    with open(p, "r+b") as f:
      f.truncate(os.path.getsize(p) // 2)


def test_round_trip_is_bit_exact(saved):
  restored, metadata = checkpoint.load_classifier(saved, _variables(1))
  got, want = (jax.tree_util.tree_leaves_with_path(v)
               for v in (restored, _variables()))
  assert [path for path, _ in got] == [path for path, _ in want]
  for (_, got_leaf), (_, want_leaf) in zip(got, want):
    assert np.asarray(got_leaf).dtype == want_leaf.dtype
    assert np.asarray(got_leaf).tobytes() == want_leaf.tobytes()
  assert metadata == {"format": checkpoint.FORMAT, **METADATA}
  # One orbax checkpoint, the metadata one of its items.
  assert {checkpoint.VARIABLES_DIR, "metadata"} <= set(os.listdir(saved))


def test_metadata_is_read_without_the_arrays(saved):
  _truncate(os.path.join(saved, checkpoint.VARIABLES_DIR, "**"))
  assert checkpoint.read_metadata(saved)["class_order"] == [2, 0, 1]


def test_never_overwrites(saved):
  with pytest.raises(FileExistsError, match="never overwritten"):
    checkpoint.save_classifier(saved, _variables(1), METADATA)
  restored, _ = checkpoint.load_classifier(saved, _variables())
  np.testing.assert_array_equal(restored["params"]["dense"]["kernel"],
                                _variables()["params"]["dense"]["kernel"])


def test_incomplete_metadata_is_not_written(tmp_path):
  meta = {k: v for k, v in METADATA.items() if k != "class_order"}
  with pytest.raises(checkpoint.MetadataError, match="'class_order'"):
    checkpoint.save_classifier(str(tmp_path / "c"), _variables(), meta)
  assert not os.listdir(tmp_path)


def test_missing_path_and_file_are_named(tmp_path):
  missing = str(tmp_path / "nothing")
  with pytest.raises(FileNotFoundError, match=f"{missing}: it does not exist"):
    checkpoint.read_metadata(missing)
  a_file = tmp_path / "a_file"
  a_file.write_text("x")
  with pytest.raises(NotADirectoryError, match=f"{a_file}: it is a file"):
    checkpoint.read_metadata(str(a_file))
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(checkpoint.DamagedCheckpointError, match="is missing"):
    checkpoint.read_metadata(str(empty))


def test_metadata_not_json_names_the_file(saved):
  meta_path = os.path.join(saved, checkpoint.METADATA_FILE)
  with open(meta_path, "w") as f:
    f.write('{"model": {"name": "ml')
  for read in (checkpoint.read_metadata,
               lambda p: checkpoint.load_classifier(p, _variables())):
    with pytest.raises(jsonio.DamagedFileError,
                       match=f"{meta_path} is damaged.*rerun the step"):
      read(saved)


@pytest.mark.parametrize("key, value, words", [
    ("adapter_dim", None, "lacks the key.*'adapter_dim' .*an int >= 0"),
    ("model", None, "lacks the key.*'model' .*model config dict"),
    ("num_classes", "3", "'num_classes' is '3', but should hold .*an int"),
    ("input_shape", [2, -2], "'input_shape' is .*list of ints"),
    ("num_classes", 4, "num_classes is 4 but class_order lists 3"),
    ("format", "cil_jax.classifier/9", "format 'cil_jax.classifier/9'"),
])
def test_bad_metadata_names_key_file_and_content(saved, key, value, words):
  meta_path = os.path.join(saved, checkpoint.METADATA_FILE)
  meta = jsonio.read_json(meta_path)
  if value is None:
    del meta[key]
  else:
    meta[key] = value
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  with pytest.raises(checkpoint.MetadataError,
                     match=f"{meta_path}.*{words}.*Rerun the step"):
    checkpoint.read_metadata(saved)


@pytest.mark.parametrize("damage", [
    lambda d: _truncate(os.path.join(d, "variables", "d", "*")),
    lambda d: _truncate(os.path.join(d, "variables", "manifest.ocdbt")),
    lambda d: os.remove(os.path.join(d, "variables", "_METADATA")),
    lambda d: os.remove(os.path.join(d, "variables", "manifest.ocdbt")),
], ids=["truncated-data", "truncated-manifest", "deleted-metadata",
        "deleted-manifest"])
def test_damaged_classifier_is_named(saved, damage):
  damage(saved)
  with pytest.raises(checkpoint.DamagedCheckpointError,
                     match=f"classifier {saved} is damaged.*rerun the step"):
    checkpoint.load_classifier(saved, _variables())


def test_damaged_training_checkpoint_names_epoch_and_fix(tmp_path):
  state = _variables()
  directory = str(tmp_path / "checkpoints")
  manager = checkpoint.TrainCheckpoints(directory)
  for epoch in (1, 2):
    manager.save(epoch, _variables(epoch))
  manager.close()
  manager = checkpoint.TrainCheckpoints(directory)
  assert manager.epochs() == [1, 2]
  restored = manager.restore(1, state)
  assert restored["params"]["dense"]["kernel"].tobytes() == _variables(
      1)["params"]["dense"]["kernel"].tobytes()

  _truncate(os.path.join(directory, "2", "default", "d", "*"))
  epoch_dir = os.path.join(directory, "2")
  with pytest.raises(checkpoint.DamagedCheckpointError,
                     match=f"checkpoint {epoch_dir} is damaged.*delete "
                     f"{epoch_dir} to resume from epoch 1"):
    manager.restore(2, state)
  os.remove(os.path.join(directory, "1", "default", "_METADATA"))
  with pytest.raises(checkpoint.DamagedCheckpointError,
                     match=f"delete {directory} to restart the step"):
    manager.restore(1, state)
  manager.close()


def test_format_1_classifier_still_loads(tmp_path):
  """The layout before the composite checkpoint: variables/ + metadata.json."""
  path = tmp_path / "old"
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(str(path / "variables"), _variables())
  checkpointer.wait_until_finished()
  with open(path / "metadata.json", "w") as f:
    json.dump({"format": "cil_jax.classifier/1", **V2_METADATA}, f)
  restored, metadata = checkpoint.load_classifier(str(path), _variables())
  # Read as format /3: the stored pixels normalised as the run did.
  assert metadata["source_format"] == "cil_jax.classifier/1"
  assert metadata["input"] == METADATA["input"]
  assert metadata["head_path"] == "head"
  np.testing.assert_array_equal(restored["params"]["dense"]["kernel"],
                                _variables()["params"]["dense"]["kernel"])


def test_wrong_shapes_are_refused(saved):
  other = _variables()
  other["params"]["dense"]["kernel"] = np.zeros((4, 5), np.float32)
  with pytest.raises(ValueError, match=r"shape \(got, want\).*\(4, 3\), \(4, 5\)"):
    checkpoint.load_classifier(saved, other)
