"""Config files loaded by path, and overrides applied to a config."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from cil_jax import config_files
from cil_jax import overrides
from cil_jax.configs import add_classes
from cil_jax.configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_config_loads_its_sibling_relative_to_itself(tmp_path):
  (tmp_path / "base.py").write_text(textwrap.dedent("""
      from ml_collections import config_dict

      def get_config():
        return config_dict.ConfigDict({"seed": 7, "name": "base"})
      """))
  (tmp_path / "child.py").write_text(textwrap.dedent("""
      from cil_jax import config_files

      base = config_files.sibling(__file__, "base")

      def get_config():
        config = base.get_config()
        config.name = "child"
        return config
      """))
  config = config_files.load(str(tmp_path / "child.py")).get_config()
  assert (config.seed, config.name) == (7, "child")
  with pytest.raises(FileNotFoundError, match="nope.py does not exist"):
    config_files.sibling(str(tmp_path / "child.py"), "nope")


def test_project_configs_load_from_any_working_directory(tmp_path):
  # No configs package on the path: cil_jax.main loads the chain
  # cifar100 -> cifar10 -> default from the file alone.
  script = ("from absl import app; from ml_collections import config_flags;"
            "c = config_flags.DEFINE_config_file('config');"
            "app.run(lambda _: print(c.value.model.resnet_depth))")
  out = subprocess.run(
      [sys.executable, "-c", script, "--config",
       os.path.join(ROOT, "configs", "cifar100.py")],
      cwd=tmp_path, capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "32"
  sweep = config_files.from_checkout("taitelbaum_sweep")
  assert len(sweep.get_sweep()) == 744
  assert sweep.get_config().dataset.name == "fashion_mnist"


def test_overrides_set_nested_keys_and_name_bad_ones():
  config = config_files.from_checkout("default").get_config()
  out = overrides.apply(config, {"eps_kd.eps": "0.3", "seed": 2,
                                 "classes.groups": [[0, 1], [2]],
                                 "classes.order_seed": 5})
  assert (out.eps_kd.eps, out.seed, out.classes.order_seed) == ("0.3", 2, 5)
  assert out.classes.groups == ((0, 1), (2,))  # JSON lists as tuples
  assert config.seed == 0 and not out.is_locked  # a copy, lock state kept
  for bad, words in [({"eps_kd.nope": 1}, "has no key 'eps_kd.nope'"),
                     ({"nope.x": 1}, "has no key 'nope.x'"),
                     ({"seed.x": 1}, "has no key 'seed.x'"),
                     ({"train.epochs": 2.5}, "train.epochs=2.5 has the wrong "
                      "type")]:
    with pytest.raises(ValueError, match=words):
      overrides.apply(config, bad)


def test_packaged_configs_are_what_the_checkout_files_return():
  for name, packaged in (("default", default), ("add_classes", add_classes)):
    assert (packaged.get_config().to_dict()
            == config_files.from_checkout(name).get_config().to_dict()), name


# Run beside a copy of the package alone, as an installed wheel lays it out.
_WITHOUT_CHECKOUT = """
import json, sys
from absl import flags
import cil_jax.main
from cil_jax import config_files
from cil_jax.configs import add_classes
try:
  config_files.from_checkout("default")
  sys.exit("found a checkout's configs/")
except FileNotFoundError:
  pass
flags.FLAGS(sys.argv)
print(json.dumps({
    "main": cil_jax.main.__file__,
    "default_file": cil_jax.main.DEFAULT_CONFIG,
    "config": json.loads(cil_jax.main._CONFIG.value.to_json()),
    "add_classes": json.loads(add_classes.get_config().to_json())}))
"""


def test_packaged_configs_and_main_default_need_no_checkout(tmp_path):
  shutil.copytree(os.path.join(ROOT, "cil_jax"), tmp_path / "cil_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  # No --config: cil_jax.main takes the packaged default, overrides applied.
  out = subprocess.run(
      [sys.executable, "-c", _WITHOUT_CHECKOUT, "--workdir", "w",
       "--config.seed=3"], cwd=tmp_path, capture_output=True, text=True,
      check=True)
  got = json.loads(out.stdout.splitlines()[-1])
  assert got["main"] == str(tmp_path / "cil_jax" / "main.py")
  assert got["default_file"] == str(tmp_path / "cil_jax" / "configs" /
                                    "default.py")
  want = config_files.from_checkout("default").get_config()
  want.seed = 3
  assert got["config"] == json.loads(want.to_json())
  assert got["add_classes"] == json.loads(
      config_files.from_checkout("add_classes").get_config().to_json())
