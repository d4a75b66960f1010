"""The per-op profile of a train step (``python -m cil_jax.bench.profile``):
HLO text and trace events read into milliseconds per step, and one real
profile of the MLP's epoch program."""

import gzip
import json

import jax
import pytest

from cil_jax.bench import op_times
from cil_jax.bench import profile

HLO = """\
HloModule jit__fun, entry_computation_layout={(f32[4]{0})->f32[4]{0}}

%body (arg: (s32[], f32[128,400])) -> (s32[], f32[128,400]) {
  %dot.18 = f32[784,400]{1,0} dot(%a, %b), lhs_contracting_dims={0}, metadata={op_name="jit(_fun)/while/body/jit(step)/transpose(jvp(Classifier))/backbone/layer_00/transpose" stack_frame_id=1}
  %ynn_fusion.6 = f32[128,400]{1,0} fusion(%x, %w), kind=kCustom, calls=%f.6, metadata={op_name="jit(_fun)/while/body/jit(step)/jvp(Classifier)/backbone/layer_00/dot_general"}
  %subtract_exponential_fusion = f32[128,4]{1,0} fusion(%l), kind=kLoop, calls=%f.7, metadata={op_name="jit(_fun)/while/body/jit(step)/jvp()/exp"}
  %multiply_add_fusion.4 = f32[784,400]{1,0} fusion(%m, %g), kind=kLoop, calls=%f.8, metadata={op_name="jit(_fun)/while/body/jit(step)/add"}
  ROOT %tuple.40 = (s32[], f32[128,400]{1,0}) tuple(%i, %ynn_fusion.6)
}

ENTRY %main.58 (p: f32[4]) -> f32[4] {
  %while.5 = (s32[], f32[128,400]{1,0}, /*index=2*/f32[4]{0}) while(%t), condition=%cond, body=%body
  %copy.3 = f32[4]{0} copy(%p)
}
"""


def _event(name, microseconds, phase="X"):
  return {"ph": phase, "name": name, "dur": microseconds, "ts": 0,
          "pid": 1, "tid": 1}


def test_instructions_read_opcode_and_op_name():
  found = op_times.instructions(HLO)
  assert found["dot.18"] == (
      "dot", "jit(_fun)/while/body/jit(step)/transpose(jvp(Classifier))/"
      "backbone/layer_00/transpose")
  assert found["ynn_fusion.6"][0] == "fusion"
  assert found["while.5"] == ("while", "")  # a tuple shape with a comment
  assert found["copy.3"] == ("copy", "")
  assert found["tuple.40"][0] == "tuple"


@pytest.mark.parametrize("op_name, part", [
    ("jit(_fun)/while/body/jit(step)/jvp(Classifier)/backbone/layer_00/"
     "dot_general", "forward"),
    ("jit(step)/transpose(jvp(Classifier))/head/dot_general", "backward"),
    ("jit(step)/jvp()/exp", "loss"),
    ("jit(step)/transpose(jvp())/div", "loss backward"),
    ("jit(_fun)/while/body/jit(step)/add", "optimizer and rest"),
    ("", "optimizer and rest"),
])
def test_parts_of_a_step(op_name, part):
  assert op_times.part(op_name) == part


def test_per_step_sums_an_instructions_events_over_steps():
  events = [_event("ynn_fusion.6", 500.0), _event("ynn_fusion.6", 300.0),
            _event("dot.18", 200.0), _event("multiply_add_fusion.4", 100.0),
            _event("while.5", 5000.0),  # spans the others: left out
            _event("ThunkExecutor::Execute", 9000.0),  # not an instruction
            _event("dot.18", 7000.0, phase="M")]  # not a complete event
  rows = op_times.per_step(events, op_times.instructions(HLO), steps=2)
  assert [r["op"] for r in rows] == ["ynn_fusion.6", "dot.18",
                                     "multiply_add_fusion.4"]
  assert rows[0]["ms_per_step"] == pytest.approx(0.4)
  assert rows[0]["calls_per_step"] == 1.0
  assert rows[0]["part"] == "forward" and rows[1]["part"] == "backward"
  assert op_times.by_part(rows) == pytest.approx(
      {"forward": 0.4, "backward": 0.1, "optimizer and rest": 0.05})
  assert op_times.short_name(rows[1]["op_name"]) == (
      "transpose(jvp(Classifier))/backbone/layer_00/transpose")


def test_read_trace_takes_gzipped_perfetto_json(tmp_path):
  path = tmp_path / "perfetto_trace.json.gz"
  with gzip.open(path, "wt") as f:
    json.dump({"traceEvents": [_event("dot.18", 1.0)]}, f)
  assert op_times.read_trace(str(path))[0]["name"] == "dot.18"


def test_the_mlp_epoch_program_profiles_into_its_matmuls():
  result = profile.profile("mlp", "epoch", 8, jax.local_devices()[:1])
  rows = {op_times.short_name(r["op_name"]): r for r in result["rows"]}
  # Layer 0's matmul (784x400 weights) in the forward pass and its weight
  # gradient in the backward pass, each once a step.
  forward = rows["jvp(Classifier)/backbone/layer_00/dot_general"]
  assert forward["part"] == "forward" and forward["calls_per_step"] == 1
  assert any(name.startswith("transpose(jvp(Classifier))/backbone/layer_00")
             and r["calls_per_step"] == 1 for name, r in rows.items())
  assert {"forward", "backward", "optimizer and rest"} <= set(
      result["parts"])
  # The ops' time is the step's (threads may overlap, so it can exceed
  # the wall time, but not by more than the CPU's two-way parallelism).
  assert 0.3 * result["wall_ms_per_step"] < result["ops_ms_per_step"]
  assert result["ops_ms_per_step"] < 2.5 * result["wall_ms_per_step"]
  # The matmuls are the largest single ops of an MLP step.
  assert result["rows"][0]["part"] in ("forward", "backward")


def test_bad_arguments_name_the_flag():
  devices = jax.local_devices()[:1]
  with pytest.raises(ValueError, match="--program must be one of"):
    profile.profile("mlp", "chunk", 8, devices)
  with pytest.raises(ValueError, match="--model must be one of"):
    profile.profile("vit", "epoch", 8, devices)
  with pytest.raises(ValueError, match="--steps must be at least 1"):
    profile.profile("mlp", "epoch", 0, devices)
