"""Plain steps (C_A, fine-tuning, joint) run the distilling method's
compiled train step with eps 0 on zero teacher logits
(``step_build.structure``'s ``shared_kd``): one train program for the
run, and every model bit for bit what a program of its own gives."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from cil_jax import methods
from cil_jax.step import build as step_build
from cil_jax import train
from tests.helpers import small_config

SMALL = {"model.hidden_sizes": (64,), "train.epochs": 10}


def _classifier(workdir, step_dir):
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  return checkpointer.restore(
      os.path.join(workdir, step_dir, "classifier"),
      ocp.args.Composite(variables=ocp.args.StandardRestore()))["variables"]


def _run(workdir, monkeypatch, **overrides):
  built = []
  make = step_build.ts.make_train_step

  def counted(*args, **kwargs):
    built.append(args[3])  # the objective
    return make(*args, **kwargs)

  monkeypatch.setattr(step_build.ts, "make_train_step", counted)
  results = train.run(small_config(**SMALL, **overrides), str(workdir))
  monkeypatch.undo()
  return results["methods"], len(built)


def test_plain_steps_share_the_distilling_step_bit_for_bit(tmp_path,
                                                           monkeypatch):
  alone, alone_built = _run(tmp_path / "alone", monkeypatch,
                            methods="finetune,joint")
  shared, shared_built = _run(tmp_path / "shared", monkeypatch,
                              methods="lwf,finetune,joint")
  # C_A, finetune and joint: one program without a teacher; with lwf in
  # the run, lwf's is the only one.
  assert alone_built == 1 and shared_built == 1
  for name in ("finetune", "joint"):
    assert shared[name]["accuracy_matrix"] == alone[name]["accuracy_matrix"]
  for step_dir in ("base/step_0", "finetune/step_1", "joint/step_1"):
    for a, b in zip(jax.tree.leaves(_classifier(tmp_path / "alone", step_dir)),
                    jax.tree.leaves(_classifier(tmp_path / "shared",
                                                step_dir))):
      np.testing.assert_array_equal(a, b)
  # lwf, in the same program, distilled its real teacher's logits: its
  # model is not fine-tuning's.
  lwf = _classifier(tmp_path / "shared", "lwf/step_1")["params"]["head"]
  finetune = _classifier(tmp_path / "shared",
                         "finetune/step_1")["params"]["head"]
  assert np.abs(lwf["kernel"] - finetune["kernel"]).max() > 1e-2


def test_host_fed_data_keeps_a_program_per_structure(tmp_path, monkeypatch):
  # Streamed batches run the teacher in the step: no logits to zero, so
  # the plain steps keep their own program.
  _, built = _run(tmp_path / "host", monkeypatch, methods="lwf,finetune",
                  **{"dataset.placement": "host"})
  assert built == 2


def test_only_plain_steps_take_a_shared_kd_part():
  lwf = methods.get_method("lwf", small_config())
  shared = step_build.shared_kd_programs([lwf])
  base = methods.get_base()
  finetune = methods.get_method("finetune", small_config())
  assert (step_build.structure(base, None, shared)
          == step_build.structure(finetune, None, shared))
  assert step_build.structure(base, None, shared)[-1] == ("renormalized",
                                                          False, 0)
  # A consolidating C_A (a run with ewc) keeps its own program.
  ewc_base = methods.base_for([methods.get_method("ewc", small_config())])
  # Its KD part, after the base structure's 8 entries.
  assert step_build.structure(ewc_base, None, shared)[8] is None
