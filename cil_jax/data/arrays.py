"""Host arrays in the models' input space: one normalisation and one
fixed-size chunked apply for every host-side pass (the pipeline's test
split, the device split's teacher logits, exemplar features, the API's
predictions)."""

import numpy as np


def standardize(images, mean, std):
  """``(images - mean) / std`` in float32, per channel: the same float32
  arithmetic as the tf.data path and the train step."""
  return ((np.asarray(images).astype(np.float32)
           - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))


def apply_in_chunks(fn, variables, count, rows_at, chunk=1024):
  """``fn(variables, images)`` over ``count`` rows, ``chunk`` at a time:
  ``rows_at(start, stop)`` gives a chunk's host images; the last chunk is
  zero-padded, so every call has one shape and ``fn`` compiles once.
  ``None`` for no rows."""
  out = []
  for start in range(0, count, chunk):
    part = rows_at(start, min(start + chunk, count))
    pad = chunk - len(part)
    if pad:
      part = np.concatenate([part, np.zeros((pad, *part.shape[1:]),
                                            part.dtype)])
    out.append(np.asarray(fn(variables, part))[:chunk - pad])
  return np.concatenate(out) if out else None
