"""The train step with local cross-entropy (``eps_kd.ce_form='local'``): the
CE is over the new classes' outputs only, so at eps = 0 the old classes'
head columns get no gradient at all."""

import jax
import numpy as np
import optax
import pytest

from cil_jax import config_check
from cil_jax import partition
from cil_jax.step import train_step as ts
from cil_jax.bench.setup import random_variables
from cil_jax.models import build_model
from tests.helpers import objective_for, small_config, tiny_model_config

NUM_OLD, NUM_SEEN, WIDTH = 3, 6, 8  # two unseen columns stay masked
IMAGE_SHAPE = (4, 4, 1)


def _one_step(local_ce, eps):
  model = build_model(tiny_model_config("mlp"), WIDTH)
  variables = random_variables(model, IMAGE_SHAPE, seed=0)
  params = variables["params"]
  rules = partition.preset_rules("all", params)
  tx = partition.masked_optimizer(optax.sgd(0.5, momentum=0.9),
                                  partition.trainable_labels(params, rules))
  step = ts.make_train_step(model.apply, model.apply, tx,
                            objective_for(local_ce=local_ce),
                            partition.rule_labeler(rules))
  state = ts.create_state(variables, tx, eps, 2.0, NUM_OLD, NUM_SEEN)
  rng = np.random.default_rng(1)
  batch = {"image": rng.normal(size=(16, *IMAGE_SHAPE)).astype(np.float32),
           "label": rng.integers(NUM_OLD, NUM_SEEN, 16).astype(np.int32)}
  # vmap with the pmap axis name runs the per-device body on one device.
  add_axis = lambda tree: jax.tree.map(lambda x: np.asarray(x)[None], tree)
  new_state, metrics = jax.vmap(step, in_axes=(0, 0, 0, None),
                                axis_name="batch")(
      add_axis(state), add_axis(variables), add_axis(batch),
      jax.random.PRNGKey(0))
  logits = np.asarray(model.apply(variables, batch["image"], train=False),
                      np.float64)
  return variables, jax.tree.map(lambda x: np.asarray(x[0]),
                                 (new_state.params, metrics)), logits, batch


@pytest.mark.parametrize("local_ce", [True, False])
def test_local_ce_leaves_old_columns_to_distillation(local_ce):
  variables, (params, metrics), logits, batch = _one_step(local_ce, eps=0.0)
  # The CE by hand: over outputs [NUM_OLD, NUM_SEEN) when local, else
  # [0, NUM_SEEN).
  kept = logits[:, NUM_OLD if local_ce else 0:NUM_SEEN]
  log_z = np.log(np.exp(kept).sum(-1))
  ce = np.mean(log_z - logits[np.arange(16), batch["label"]])
  assert float(metrics["ce"]) == pytest.approx(ce, rel=1e-5)
  assert float(metrics["loss"]) == pytest.approx(ce, rel=1e-5)
  before, after = variables["params"]["head"], params["head"]
  old_moved = [not np.array_equal(before[k][..., :NUM_OLD],
                                  after[k][..., :NUM_OLD])
               for k in ("kernel", "bias")]
  assert old_moved == [not local_ce] * 2
  assert not np.allclose(before["kernel"][:, NUM_OLD:NUM_SEEN],
                         after["kernel"][:, NUM_OLD:NUM_SEEN])
  for k in ("kernel", "bias"):
    np.testing.assert_array_equal(before[k][..., NUM_SEEN:],
                                  after[k][..., NUM_SEEN:])


def test_local_ce_keeps_distillation_on_old_columns():
  # With KD in the mix the old columns learn again, from the teacher only.
  variables, (params, metrics), _, _ = _one_step(True, eps=0.5)
  assert float(metrics["kd"]) > 0.0
  assert not np.array_equal(variables["params"]["head"]["kernel"][:, :NUM_OLD],
                            params["head"]["kernel"][:, :NUM_OLD])


def test_unknown_ce_form_names_the_key():
  config = small_config(**{"eps_kd.ce_form": "global"})
  with pytest.raises(ValueError, match=r"config.eps_kd.ce_form='global'; use "
                     r"one of \('all', 'local'\)"):
    config_check.validate(config, 1)
