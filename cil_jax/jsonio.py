"""JSON files of a workdir: written atomically, read with errors that name them.

Every JSON file cil_jax writes (``config.json``, ``result.json``,
``results.json``, ``timing.json``, sweep records) goes through
``write_json``: a temporary sibling, then a rename, so a kill never leaves a
half-written file. ``read_json`` turns a damaged file into an error that names
it and says what to do.
"""

import json
import os
import uuid


class DamagedFileError(ValueError):
  """A JSON file exists but cannot be parsed."""


def write_json(path, obj):
  """Writes ``obj`` to ``path`` atomically (numpy scalars allowed)."""
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  try:
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2, default=_json_default)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def read_json(path, fix="delete it to have it written again"):
  """The parsed content of ``path``; a file that is not valid JSON raises
  ``DamagedFileError`` naming the file, the parse error and ``fix``."""
  try:
    with open(path) as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DamagedFileError(
        f"{path} is damaged (not valid JSON: {e}); {fix}.") from None


def _json_default(value):
  if hasattr(value, "item"):  # numpy scalars
    return value.item()
  if hasattr(value, "tolist"):  # numpy arrays
    return value.tolist()
  raise TypeError(f"not JSON serialisable: {type(value)}")
