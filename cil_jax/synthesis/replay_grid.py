"""A PNG of synthetic old-class inputs, one row per class, so a user can
look at what replay trains on (``replay_samples.png`` in a step's
directory)."""

import numpy as np

# Classes and samples shown at most.
MAX_CLASSES = 20
PER_CLASS = 10


def write(path, replay, class_ids, mean, std):
  """Writes ``path``: up to ``PER_CLASS`` inputs of ``replay`` (a
  synthetic set, ``inversion.synthesize``) per old class, by the teacher's
  prediction, in the dataset's pixel units (``x * std + mean``), each image
  scaled to its own range. ``class_ids[i]`` names output ``i``. Returns
  ``False`` (writing nothing) for inputs that are not images."""
  images = replay["image"]
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    return False
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  num_old = min(len(class_ids), MAX_CLASSES)
  predicted = np.argmax(replay["logits"][:, :len(class_ids)], axis=-1)
  pixels = images * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  fig, axes = plt.subplots(num_old, PER_CLASS, squeeze=False,
                           figsize=(PER_CLASS * 0.9, num_old * 0.9))
  for row in range(num_old):
    chosen = np.flatnonzero(predicted == row)[:PER_CLASS]
    for col in range(PER_CLASS):
      ax = axes[row, col]
      ax.set_xticks([])
      ax.set_yticks([])
      if col == 0:
        ax.set_ylabel(str(class_ids[row]), rotation=0, labelpad=12)
      if col < len(chosen):
        image = pixels[chosen[col]]
        low, high = image.min(), image.max()
        image = (image - low) / max(high - low, 1e-6)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                  cmap="gray")
      else:
        ax.axis("off")
  fig.suptitle("synthetic inputs by the teacher's predicted class")
  fig.savefig(path, dpi=80)
  plt.close(fig)
  return True
