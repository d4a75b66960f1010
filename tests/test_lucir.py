"""LUCIR (Hou et al. 2019): the cosine head, the less-forget constraint and
the margin ranking loss on hand-computed numbers; widening a cosine head;
a short digits run against fine-tuning; config errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cil_jax import api
from cil_jax import partition
from cil_jax.step import outputs as step_outputs
from cil_jax import train
from cil_jax.methods import lucir
from cil_jax.models import build_model
from cil_jax.models.expand import expand_variables
from cil_jax.models.expand import resize_head
from cil_jax.models.layers import CosineHead
from tests.helpers import small_config
from tests.helpers import tiny_model_config


def test_cosine_head_is_sigma_times_cosine_by_hand():
  params = {"kernel": jnp.array([[1.0, 0.0], [0.0, 2.0]]), "scale": 3.0}
  logits = CosineHead(2).apply({"params": params}, jnp.array([[3.0, 4.0]]))
  # cos((3, 4), (1, 0)) = 0.6, cos((3, 4), (0, 2)) = 0.8; sigma = 3.
  np.testing.assert_allclose(logits, [[1.8, 2.4]], rtol=1e-6)


def test_less_forget_by_hand():
  features = jnp.array([[1.0, 0.0], [0.0, 2.0]])
  assert float(lucir.less_forget(features, 3.0 * features)) == pytest.approx(
      0.0, abs=1e-6)
  assert float(lucir.less_forget(
      features, jnp.array([[0.0, 1.0], [2.0, 0.0]]))) == pytest.approx(1.0)
  assert float(lucir.less_forget(
      features[:1], jnp.array([[1.0, 1.0]]))) == pytest.approx(
          1.0 - 1.0 / np.sqrt(2.0), rel=1e-6)
  # 5 * sqrt(4 old / 2 new classes).
  assert float(lucir.adaptive_weight(5.0, 4, 6)) == pytest.approx(
      5.0 * np.sqrt(2.0), rel=1e-6)


def test_margin_ranking_by_hand():
  # Old classes 0, 1; new 2, 3, 4; column 5 not seen yet (ignored).
  cosines = jnp.array([[0.9, 0.1, 0.2, 0.6, 0.3, 0.99],
                       [0.0, 0.4, 0.5, -0.2, 0.45, 0.99]])
  labels = jnp.array([0, 1])
  # Row 0: top-2 new 0.6, 0.3 -> max(0, .5-.9+.6) + max(0, .5-.9+.3) = 0.2.
  # Row 1: top-2 new 0.5, 0.45 -> 0.6 + 0.55 = 1.15. Mean 0.675.
  assert float(lucir.margin_ranking(cosines, labels, 2, 5, 0.5, 2)) == (
      pytest.approx(0.675, rel=1e-6))
  # More negatives than new classes: the missing one adds nothing, and
  # the third new class is no violation in either row.
  assert float(lucir.margin_ranking(cosines, labels, 2, 5, 0.5, 4)) == (
      pytest.approx(0.675, rel=1e-6))


def test_cosine_head_widens_and_masks_its_columns_not_its_scale():
  config = tiny_model_config("mlp", cosine_head=True)
  x = jnp.zeros((1, 8, 8, 1))
  old = build_model(config, 3).init(jax.random.PRNGKey(0), x)
  old["params"]["head"]["scale"] = jnp.float32(7.0)
  fresh = build_model(config, 5).init(jax.random.PRNGKey(1), x)
  assert float(fresh["params"]["head"]["scale"]) == 10.0  # the init
  wide = expand_variables(old, fresh, 3)
  head = wide["params"]["head"]
  assert float(head["scale"]) == 7.0 and head["kernel"].shape == (8, 5)
  np.testing.assert_array_equal(head["kernel"][:, :3],
                                old["params"]["head"]["kernel"])
  cut = resize_head(wide, 2)["params"]["head"]
  assert cut["kernel"].shape == (8, 2) and float(cut["scale"]) == 7.0
  updates = partition.keep_head_columns(
      jax.tree.map(jnp.ones_like, wide["params"]), 1, 2)
  assert float(updates["head"]["scale"]) == 1.0
  np.testing.assert_array_equal(updates["head"]["kernel"][0],
                                [0, 1, 0, 0, 0])


def _config(**overrides):
  return small_config(**{
      "methods": "lucir,finetune", "train.epochs": 2,
      "train.checkpoint_every_epochs": 2, "outputs.plots": False,
      "memory.size": 120, "model.cosine_head": True,
      "classes.groups": ((0, 1, 2, 3), (4, 5, 6), (7, 8, 9)), **overrides})


def test_lucir_keeps_old_classes_on_digits(tmp_path):
  results = train.run(_config(), str(tmp_path))["methods"]
  finetune_old = results["finetune"]["final_acc_old"]
  assert finetune_old < 0.1
  assert results["lucir"]["final_acc_old"] > finetune_old + 0.5
  assert results["lucir"]["final_acc_new"] > 0.4
  # The saved classifier records its cosine head and loads as one.
  _, variables, meta = api.load(step_outputs.classifier_dir(
      os.path.join(str(tmp_path), "lucir", "step_2")))
  assert meta["model"]["cosine_head"] is True
  assert variables["params"]["head"]["kernel"].shape[-1] == 10
  assert float(variables["params"]["head"]["scale"]) > 0


@pytest.mark.parametrize("override,key", [
    ({"model.cosine_head": False}, "config.model.cosine_head"),
    ({"methods": "lucir,bic"}, "config.model.cosine_head"),
    ({"lucir.top_k": 0}, "config.lucir.top_k"),
    ({"lucir.margin": -1.0}, "config.lucir.margin"),
])
def test_bad_lucir_config_fails_before_the_workdir(tmp_path, override, key):
  workdir = str(tmp_path / "run")
  with pytest.raises(ValueError, match=key.replace(".", r"\.")):
    train.run(_config(**override), workdir)
  assert not os.path.exists(workdir)
