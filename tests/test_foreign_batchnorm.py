"""What the data-free recipe picks from the classifier it is given. A
classifier a user brings with BatchNorm (the zoo's Flax CNN,
benchmarks/zoo/models.py, written and named outside cil_jax): when a step
freezes BatchNorm statistics, or trains no layer that has them, the module
trains in its inference mode, so new-class batches neither normalise it
nor move its running statistics; a module without BatchNorm keeps its
training mode (dropout). Synthesis starts from noise where BatchNorm
statistics guide it, from the new classes' images where nothing does."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.zoo import models as zoo
from cil_jax import methods
from cil_jax import partition
from cil_jax.methods import df_replay
from cil_jax.models import abstract_variables
from cil_jax.models import foreign
from cil_jax.step import build


def _classifier(module, head):
  return foreign.FlaxClassifier(module, head, 3, "train",
                                layers=("conv0", "conv1", "fc", head))


def test_inference_mode_normalises_by_the_running_statistics_and_keeps_them():
  model = _classifier(zoo.ConvNet(num_classes=3, width=4), "classifier")
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 28, 28, 1)) * 3.0 + 1.0
  variables = model.init(jax.random.PRNGKey(1), x)
  rngs = {"dropout": jax.random.PRNGKey(2)}
  frozen = model.in_inference_mode().widened(3)
  out, updates = frozen.apply(variables, x, train=True, rngs=rngs,
                              mutable=["batch_stats"])
  np.testing.assert_allclose(out, model.apply(variables, x, train=False),
                             rtol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, updates["batch_stats"],
               variables["batch_stats"])
  # In its training mode the batch normalises itself and moves the stats.
  trained, moved = model.apply(variables, x, train=True, rngs=rngs,
                               mutable=["batch_stats"])
  assert float(jnp.max(jnp.abs(trained - out))) > 1e-2
  assert not np.allclose(moved["batch_stats"]["bn0"]["mean"],
                         variables["batch_stats"]["bn0"]["mean"])


def _ctx(model):
  abstract = abstract_variables(model, (28, 28, 1))
  return types.SimpleNamespace(foreign=model, num_outputs=3,
                               abstract=lambda n, dim: abstract)


def _rules(ctx, preset):
  params = ctx.abstract(3, 0)["params"]
  return partition.preset_rules(preset, params, layout=(
      ctx.foreign.head_path, ctx.foreign.layers))


def test_the_step_picks_inference_mode_from_the_module_and_the_method():
  cnn = _ctx(_classifier(zoo.ConvNet(num_classes=3, width=4), "classifier"))
  mlp = _ctx(_classifier(zoo.PlainMLP(num_classes=3), "fc3"))
  eps_kd = methods.Method(methods.get("eps_kd"), 0.5)  # batch_stats: train
  frozen = methods.Method(methods.get("df_replay"), 0.5,
                          batch_stats="frozen")
  assert build.foreign_inference(cnn, frozen, _rules(cnn, "all"), 0)
  assert not build.foreign_inference(cnn, eps_kd, _rules(cnn, "all"), 0)
  # Only the head trains: no BatchNorm layer learns, so none normalises
  # by new-class batches.
  assert build.foreign_inference(cnn, eps_kd, _rules(cnn, "head"), 0)
  # Nothing to freeze without BatchNorm: dropout keeps its training mode.
  assert not build.foreign_inference(mlp, frozen, _rules(mlp, "all"), 0)


def test_synthesis_starts_from_noise_with_a_batchnorm_prior_else_new_data():
  assert df_replay.pick_init("auto", in_memory=True, prior=True) == "noise"
  assert df_replay.pick_init("auto", in_memory=True, prior=False) == (
      "new_data")
  assert df_replay.pick_init("auto", in_memory=False, prior=False) == "noise"
  assert df_replay.pick_init("noise", in_memory=True, prior=False) == "noise"
  with pytest.raises(ValueError, match="inversion.init='new_data' needs"):
    df_replay.pick_init("new_data", in_memory=False, prior=True)
