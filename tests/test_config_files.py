"""Config files loaded by path, and overrides applied to a config."""

import os
import subprocess
import sys
import textwrap

import pytest

from cil_jax import config_files
from cil_jax import overrides

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
