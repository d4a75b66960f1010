"""Config overrides of a run, and which of them a group of runs may differ in.

Runs whose configs differ only in *member keys* (``methods`` and the
sections of the methods that mark theirs ``Spec.member_section``: knobs
that change nothing of C_A) share everything that comes before the later
steps: data, class sequence, the base classifier C_A, start-up and
compiled programs. ``train.run_members`` trains such a group in one
process.
"""

import copy


def is_member_key(key):
  from cil_jax import methods  # pylint: disable=g-import-not-at-top
  return key == "methods" or key.split(".")[0] in methods.member_sections()


def apply(config, overrides):
  """A copy of ``config`` with ``{"a.b": value}`` overrides set.

  Values may come from JSON: lists become tuples, as config files write
  them. Unknown keys and ill-typed values raise, naming the key.
  """
  config = copy.deepcopy(config)
  was_locked = config.is_locked
  config.lock()  # so that an unknown key raises instead of being added
  for key, value in overrides.items():
    try:
      # One key at a time, so that an error names the key that caused it.
      config.update_from_flattened_dict({key: _as_tuples(value)})
    except (KeyError, AttributeError):
      raise ValueError(f"Override {key}={value!r}: the config has no key "
                       f"{key!r}.") from None
    except TypeError as e:
      raise ValueError(f"Override {key}={value!r} has the wrong type for "
                       f"the config: {e}") from None
  if not was_locked:
    config.unlock()
  return config


def flatten(tree, prefix=""):
  """``{"a.b": leaf}`` of a nested dict (a config's ``to_dict()``)."""
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def non_member_differences(configs):
  """Keys other than member keys on which ``configs`` disagree."""
  flats = [flatten(c.to_dict()) for c in configs]
  keys = set().union(*flats)
  return sorted(k for k in keys if not is_member_key(k)
                and len({repr(f.get(k)) for f in flats}) > 1)


def _as_tuples(value):
  if isinstance(value, list):
    return tuple(_as_tuples(v) for v in value)
  return value
