"""Where a compiled program's time goes, op by op, from a profiler trace.

XLA runs a compiled program as a sequence of its HLO instructions (on a
CPU, one traced event per fusion, dot or copy it executes); JAX's profiler
(``jax.profiler.trace(..., create_perfetto_trace=True)``) records each as an
event named after the instruction. ``instructions`` reads the compiled
HLO's text (``Compiled.as_text()``) for each instruction's opcode and the
JAX operation it came from (its ``op_name`` metadata, e.g.
``transpose(jvp(Classifier))/backbone/layer_00/dot_general``: the backward
pass of layer 0's matmul); ``per_step`` sums the trace's events of those
instructions into milliseconds per train step, each row with its part of
the step (``part``). Pure functions of text and events, so they are tested
without a profiler.
"""

import collections
import gzip
import json
import re

# ``  %name = <shape> opcode(operands), ..., metadata={op_name="..." ...}``;
# a tuple shape is parenthesised and may hold spaces and ``/*index=5*/``.
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+) = (?:\([^()]*\)|\S+) ([a-z][\w\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# Instructions whose events hold other instructions' events.
_CONTAINERS = ("while", "conditional", "call")


def instructions(hlo_text):
  """``{instruction name: (opcode, op_name)}`` of a compiled HLO module's
  text; ``op_name`` is ``""`` where the instruction has no metadata."""
  found = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if match:
      op_name = _OP_NAME.search(line)
      found[match.group(1)] = (match.group(2),
                               op_name.group(1) if op_name else "")
  return found


def part(op_name):
  """The part of a train step an instruction belongs to, by its JAX
  operation: the model's forward or backward pass (``jvp(<Module>)`` and
  ``transpose(jvp(<Module>))``, as ``jax.grad`` names them), the loss's
  (``jvp()``: outside any module), or the rest (optimizer update, metrics,
  the batch's gather, loop bookkeeping)."""
  if "transpose(jvp(" in op_name:
    return ("backward" if re.search(r"transpose\(jvp\([A-Z]", op_name)
            else "loss backward")
  if "jvp(" in op_name:
    return "forward" if re.search(r"jvp\([A-Z]", op_name) else "loss"
  return "optimizer and rest"


def short_name(op_name):
  """``op_name`` without the program's loop and step wrappers
  (``jit(_fun)/while/body/jit(step)/``), which every op of a step shares."""
  tail = op_name.rsplit("/while/body/", 1)[-1]
  return tail[len("jit(step)/"):] if tail.startswith("jit(step)/") else tail


def read_trace(path):
  """The ``traceEvents`` of a (gzipped) Chrome/Perfetto JSON trace."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    trace = json.load(f)
  return trace["traceEvents"] if isinstance(trace, dict) else trace


def per_step(events, hlo_instructions, steps):
  """Rows ``{"op", "opcode", "op_name", "part", "calls_per_step",
  "ms_per_step"}``, slowest first, of the complete events (``ph == "X"``,
  durations in microseconds) named after an instruction of the program,
  over ``steps`` train steps. Loops and calls are left out: their events
  span the instructions they run."""
  total = collections.Counter()
  calls = collections.Counter()
  for event in events:
    name = event.get("name")
    if event.get("ph") != "X" or name not in hlo_instructions:
      continue
    if hlo_instructions[name][0] in _CONTAINERS:
      continue
    total[name] += event["dur"]
    calls[name] += 1
  rows = []
  for name, microseconds in total.most_common():
    opcode, op_name = hlo_instructions[name]
    rows.append({"op": name, "opcode": opcode, "op_name": op_name,
                 "part": part(op_name),
                 "calls_per_step": calls[name] / steps,
                 "ms_per_step": microseconds / 1e3 / steps})
  return rows


def by_part(rows):
  """``{part: ms per step}`` of ``per_step``'s rows."""
  parts = collections.Counter()
  for row in rows:
    parts[row["part"]] += row["ms_per_step"]
  return dict(parts.most_common())
