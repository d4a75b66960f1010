"""An image folder as ``api.add_classes``'s data: ``ROOT/train/<class
name>/*.png`` (the new classes only) and ``ROOT/test/<class name>/*``
(every class, old and new), the usual layout of TFDS' ImageFolder.

Images are read with Pillow as stored (a grayscale PNG stays one channel,
which TFDS' ImageFolder would turn into three), and must all have one
shape. A folder's class is found by name: a name among the teacher's
``class_names`` is that class; other names are new classes, numbered after
the teacher's largest class id in sorted name order, unless ``class_ids``
maps them.
"""

import os

import numpy as np

SPLITS = ("train", "test")
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read(root, teacher_classes, teacher_names, class_ids=None):
  """``({"train": (images, labels), "test": ...}, {new id: name})``."""
  for split in SPLITS:
    if not os.path.isdir(os.path.join(root, split)):
      raise ValueError(
          f"Image folder {root!r} has no {split}/ directory; lay it out as "
          f"{root}/train/<class name>/*.png (new classes only) and "
          f"{root}/test/<class name>/*.png (every class).")
  names = {n: int(c) for c, n in zip(teacher_classes, teacher_names or ())
           if n}
  ids = dict(class_ids or {})
  folders = sorted({d for split in SPLITS
                    for d in os.listdir(os.path.join(root, split))
                    if os.path.isdir(os.path.join(root, split, d))})
  next_id = max(teacher_classes) + 1
  for folder in folders:
    if folder not in names and folder not in ids:
      ids[folder] = next_id
      next_id += 1
  ids.update(names)
  splits = {split: _read_split(os.path.join(root, split), ids)
            for split in SPLITS}
  known = sorted(set(np.unique(splits["train"][1])) & set(teacher_classes))
  if known:
    labels = {c: n for n, c in ids.items()}
    raise ValueError(
        f"{root}/train holds classes the teacher already knows: "
        f"{[labels[int(c)] for c in known]}; train/ must hold the new "
        f"classes only (the teacher's examples belong in test/).")
  new = {c: n for n, c in ids.items() if c not in teacher_classes}
  return splits, new


def _read_split(directory, ids):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images, labels = [], []
  for folder in sorted(os.listdir(directory)):
    path = os.path.join(directory, folder)
    if not os.path.isdir(path):
      continue
    for name in sorted(os.listdir(path)):
      if name.lower().endswith(EXTENSIONS):
        with Image.open(os.path.join(path, name)) as image:
          array = np.asarray(image)
        images.append(array[..., None] if array.ndim == 2 else array)
        labels.append(ids[folder])
  if not images:
    raise ValueError(f"Image folder {directory!r} holds no images "
                     f"({', '.join(EXTENSIONS)}) in class folders.")
  shapes = sorted({i.shape for i in images})
  if len(shapes) > 1:
    raise ValueError(f"Images in {directory!r} differ in shape ({shapes[:3]}"
                     f"); resize them to the teacher's input shape first.")
  return np.stack(images), np.asarray(labels, np.int64)
