"""What input a classifier expects: the pixel scale and the normalisation.

An input spec is a dict (JSON in a classifier's metadata, key ``input``)::

  pixels         "unit"   pixels in [0, 1]: raw / the dataset's maximum
                 "byte"   pixels in [0, 255]
                 "stored" pixels as the dataset stores them (0..255 for TFDS
                          images, 0..16 for digits); cil_jax's own classifiers
  normalization  "none"      the pixels as they are
                 "mean_std"  (pixels - mean) / std per channel, ``mean`` and
                             ``std`` given in the units of ``pixels``
                 "module"    the module normalises its input itself; it gets
                             the pixels as they are
  mean, std      lists of numbers, one per channel (``mean_std`` only)

Nothing is assumed: both fields are required. The run's pipeline computes
``(raw - mean_raw) / std_raw`` with the spec folded into raw units
(``raw_mean_std``), the same float32 arithmetic for every spec.
"""

import numpy as np

PIXELS = {"unit": 1.0, "byte": 255.0}  # and "stored": the raw values
NORMALIZATIONS = ("none", "mean_std", "module")


def problems(spec):
  """What is wrong with ``spec`` (a parsed JSON value), as phrases naming
  the field; empty when it is a valid input spec."""
  if not isinstance(spec, dict):
    return [f"it is a {type(spec).__name__}, not an object with 'pixels' "
            f"and 'normalization'"]
  found = []
  if spec.get("pixels") not in (*PIXELS, "stored"):
    found.append(f"'pixels' is {spec.get('pixels')!r}, not one of "
                 f"{[*PIXELS, 'stored']}")
  normalization = spec.get("normalization")
  if normalization not in NORMALIZATIONS:
    found.append(f"'normalization' is {normalization!r}, not one of "
                 f"{list(NORMALIZATIONS)}")
  if normalization == "mean_std":
    for key in ("mean", "std"):
      value = spec.get(key)
      if not (isinstance(value, list) and value and all(
          isinstance(v, (int, float)) and not isinstance(v, bool)
          for v in value)):
        found.append(f"normalization 'mean_std' needs {key!r}, a list of "
                     f"numbers per channel, but it is {value!r}")
    if not found and min(spec["std"]) <= 0:
      found.append(f"'std' is {spec['std']}; every std must be > 0")
  elif normalization in NORMALIZATIONS and (spec.get("mean") or
                                            spec.get("std")):
    found.append(f"normalization {normalization!r} takes no 'mean'/'std' "
                 f"(use 'mean_std' to apply them)")
  return found


def from_config(teacher_config):
  """The spec given by ``config.teacher.input_*``, or ``None`` when
  ``input_pixels`` and ``input_normalization`` are both unset."""
  c = teacher_config
  if not c.input_pixels and not c.input_normalization:
    return None
  spec = {"pixels": c.input_pixels or None,
          "normalization": c.input_normalization or None}
  if c.input_mean or c.input_std:
    spec.update(mean=[float(v) for v in c.input_mean],
                std=[float(v) for v in c.input_std])
  return spec


def raw_mean_std(spec, pixel_max, channels):
  """``(mean, std)`` per channel in the dataset's raw units such that
  ``(raw - mean) / std`` is the input ``spec`` describes; ``pixel_max`` is
  the largest raw value (``DatasetInfo.pixel_max``)."""
  scale = 1.0 if spec["pixels"] == "stored" else (
      PIXELS[spec["pixels"]] / pixel_max)
  if spec["normalization"] == "mean_std":
    mean = np.broadcast_to(np.asarray(spec["mean"], np.float64), (channels,))
    std = np.broadcast_to(np.asarray(spec["std"], np.float64), (channels,))
  else:
    mean, std = np.zeros(channels), np.ones(channels)
  # (raw * scale - mean) / std == (raw - mean / scale) / (std / scale)
  return tuple((mean / scale).tolist()), tuple((std / scale).tolist())


def describe(spec):
  """One line for people: e.g. ``pixels in [0, 1], then (x - mean) / std
  with mean [0.5] std [0.25]``."""
  pixels = {"unit": "pixels in [0, 1]", "byte": "pixels in [0, 255]",
            "stored": "pixels as the dataset stores them"}[spec["pixels"]]
  return pixels + {
      "none": ", not normalised",
      "module": ", normalised by the module itself",
      "mean_std": f", then (x - mean) / std with mean {spec.get('mean')} "
                  f"std {spec.get('std')}"}[spec["normalization"]]
