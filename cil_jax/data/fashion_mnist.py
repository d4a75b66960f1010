"""Offline Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package.

The package installs the original IDX files under
``/usr/share/datasets/fashion-mnist/``, but gzip-recompressed: their bytes,
hence sha256, differ from those TFDS registers for the upstream downloads, so
TFDS's ``fashion_mnist`` builder rejects them with NonMatchingChecksumError
when given that folder as ``manual_dir``.

We do not edit TFDS's checksum files. Instead ``_DebianFashionMNIST`` is
TFDS's own ``FashionMNIST`` builder (same name, version, features, split and
example generation, same prepared files) whose registered checksums are those
of the Debian files below, so TFDS still verifies every byte it reads. The
decompressed IDX content is the dataset; its sha256 is listed for reference.
Once prepared, ``tfds.builder("fashion_mnist")`` loads it like any download.
"""

import os

# TFDS at module level: the builder below subclasses TFDS's. Only
# tfds_build.py imports this module, when a dataset must be built.
import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"

# filename: (size, sha256 of the Debian .gz, sha256 of the decompressed IDX)
DEBIAN_FILES = {
    "train-images-idx3-ubyte.gz": (
        26421856,
        "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
    "train-labels-idx1-ubyte.gz": (
        29491,
        "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
    "t10k-images-idx3-ubyte.gz": (
        4422079,
        "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
    "t10k-labels-idx1-ubyte.gz": (
        5125,
        "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
}


class _DebianFashionMNIST(mnist.FashionMNIST, skip_registration=True):
  """TFDS's FashionMNIST with the Debian files' checksums registered."""
  name = "fashion_mnist"
  url_infos = {
      mnist.FashionMNIST.URL + filename: tfds.download.checksums.UrlInfo(
          size=size, checksum=sha256, filename=filename)
      for filename, (size, sha256, _) in DEBIAN_FILES.items()
  }


def has_debian_files(manual_dir=DEBIAN_DIR):
  return all(os.path.isfile(os.path.join(manual_dir, f)) for f in DEBIAN_FILES)


def prepare_from_debian(data_dir, manual_dir=DEBIAN_DIR):
  """Builds ``fashion_mnist`` into ``data_dir`` from the Debian files."""
  builder = _DebianFashionMNIST(data_dir=data_dir)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder
