"""Readers of every data source: arrays and labels in host memory.

Each reader returns `Examples` (`x` `[N, *event]`, labels `y` `[N]` or
None, the class names) exactly as stored: uint8 pixels stay uint8, table
columns become float32. What a run then does with them (class selection,
held-out test split, standardization, binarization, sharding) is the same
for every source and lives in `input_pipeline`.

Sources (`data.source`):
  tfds     any tensorflow-datasets image dataset, by `data.name`;
  npz      a `.npz` with `x` `[N, ...]` and optional `y` `[N]`, or a `.npy`
           of `x`; uint8 in 0..255, or floats;
  images   a folder of images (PNG, JPEG, ...), one subfolder per class or
           flat (unlabeled), all of one size, grayscale or RGB;
  csv      a table of numeric columns with a header row; `data.label_column`
           names an optional label column (any values);
  sklearn  a dataset that ships inside scikit-learn, by `data.name`
           (`SKLEARN`), so that examples and tests run offline.
Every error a user's data can cause is a `UserError` naming the file.
"""

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import socket
from typing import Any
import zipfile

from absl import logging
import numpy as np

from vae_jax import files
from vae_jax.errors import UserError

SOURCES = ("tfds", "npz", "images", "csv", "sklearn")
SKLEARN = ("digits", "breast_cancer", "iris", "wine")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif",
                    ".tiff")


@dataclasses.dataclass
class Examples:
  """One split as stored: examples, labels and where they came from."""
  x: np.ndarray  # [N, *event]: uint8 pixels, or float32
  y: np.ndarray | None  # [N] int32 indices into class_names, or None
  class_names: tuple[str, ...]  # () without labels
  where: str  # names the data in messages, e.g. "digits.npz"


def _labels(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
  """Any label values -> (int32 indices, sorted class names as strings)."""
  values = np.asarray(values)
  if values.dtype.kind == "f" and np.all(values == np.round(values)):
    values = values.astype(np.int64)  # 1.0 and 1 name the same class.
  classes, index = np.unique(values, return_inverse=True)
  return index.astype(np.int32), tuple(str(c) for c in classes)


def _check_count(x: np.ndarray, y: np.ndarray | None, where: str) -> None:
  if y is not None and len(y) != len(x):
    raise UserError(f"{where} holds {len(y)} labels for {len(x)} examples; "
                    "give one label per example.")


def _exists(path: str, what: str) -> None:
  if not path:
    raise UserError(f"data.source needs data.path, the {what}.")
  if not os.path.exists(path):
    raise UserError(f"{path} does not exist: point data.path (or "
                    f"data.test_path) at the {what}.")


# ----------------------------------------------------------------------------
# The readers.


def read_npz(path: str) -> Examples:
  """`x` and optional `y` of a `.npz`, or `x` of a `.npy`."""
  _exists(path, ".npz or .npy file")
  try:
    f = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is not a NumPy .npz or .npy file "
                    f"({type(e).__name__}).") from None
  if isinstance(f, np.lib.npyio.NpzFile):
    with f:
      if "x" not in f.files:
        raise UserError(f"{path} has no array 'x' (it has "
                        f"{', '.join(f.files) or 'none'}); save the "
                        "examples as x=[N, ...] and labels as y=[N].")
      x, y = f["x"], (f["y"] if "y" in f.files else None)
  else:
    x, y = f, None
  if x.ndim == 0:
    raise UserError(f"{path}: x is a scalar, not examples [N, ...].")
  if x.dtype.kind not in "uif" or (x.dtype.kind in "ui"
                                   and x.dtype != np.uint8):
    if x.dtype.kind == "b":
      x = x.astype(np.float32)
    elif x.dtype.kind in "ui":
      raise UserError(f"{path}: x holds {x.dtype} values; give uint8 pixels "
                      "in 0..255 or floats.")
    else:
      raise UserError(f"{path}: x holds {x.dtype} values, not numbers.")
  if x.dtype.kind == "f":
    x = x.astype(np.float32)
  _check_count(x, y, path)
  labels, names = _labels(y) if y is not None else (None, ())
  if x.ndim == 3:  # [N, H, W] grayscale images.
    x = x[..., None]
  return Examples(x, labels, names, path)


def _image_files(folder: str) -> tuple[list[str], list[str] | None]:
  """Sorted image paths and their class folder names (None when flat)."""
  entries = sorted(os.listdir(folder))
  subdirs = [e for e in entries if os.path.isdir(os.path.join(folder, e))]
  files = [e for e in entries if e.lower().endswith(IMAGE_EXTENSIONS)]
  if subdirs and files:
    raise UserError(f"{folder} holds both images ({files[0]}, ...) and "
                    f"subfolders ({subdirs[0]}, ...): put every image in a "
                    "class subfolder, or none.")
  if not subdirs:
    return [os.path.join(folder, f) for f in files], None
  paths, classes = [], []
  for d in subdirs:
    for f in sorted(os.listdir(os.path.join(folder, d))):
      if f.lower().endswith(IMAGE_EXTENSIONS):
        paths.append(os.path.join(folder, d, f))
        classes.append(d)
  return paths, classes


def read_images(folder: str) -> Examples:
  """Every image of a folder as uint8 `[N, H, W, C]` (C = 1 or 3).

  One subfolder per class gives labels (classes in sorted folder-name
  order); a flat folder gives none. Images are read in sorted order. If any
  image has color, all are read as RGB; otherwise as grayscale.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  _exists(folder, "folder of images")
  if not os.path.isdir(folder):
    raise UserError(f"{folder} is a file, not a folder of images; for an "
                    "array file use data.source=npz.")
  paths, classes = _image_files(folder)
  images = []
  for p in paths:
    try:
      with Image.open(p) as im:
        im.load()
        images.append(im.copy())
    except OSError:
      raise UserError(f"{p} is not an image Pillow can read.") from None
  sizes = {}
  for p, im in zip(paths, images):
    sizes.setdefault(im.size, p)
  if len(sizes) > 1:
    shown = "; ".join(f"{p} is {w}x{h}" for (w, h), p in
                      list(sizes.items())[:4])
    raise UserError(f"The images in {folder} differ in size ({shown}): "
                    "resize them to one size.")
  gray = all(im.mode in ("1", "L", "LA", "I", "I;16", "F") for im in images)
  mode = "L" if gray else "RGB"
  x = (np.stack([np.asarray(im.convert(mode), np.uint8) for im in images])
       if images else np.zeros((0, 1, 1), np.uint8))
  if gray:
    x = x[..., None]
  labels, names = _labels(np.asarray(classes)) if classes else (None, ())
  return Examples(x, labels, names, folder)


def read_csv(path: str, label_column: str = "") -> Examples:
  """A CSV table with a header: numeric columns as float32 `[N, D]`.

  Empty cells and "nan" become NaN (refused later, with their place).

  Raises:
    UserError: no such file or label column, or non-numeric columns other
      than the label column (all of them named).
  """
  _exists(path, "CSV file")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise UserError(f"{path} is empty; give a header row of column names "
                    "and one row per example.")
  header, body = rows[0], [r for r in rows[1:] if r]
  short = next((i for i, r in enumerate(body) if len(r) != len(header)), None)
  if short is not None:
    raise UserError(f"{path}: row {short + 2} has {len(body[short])} cells, "
                    f"the header {len(header)}.")
  if label_column and label_column not in header:
    raise UserError(f"{path} has no column {label_column!r} "
                    f"(data.label_column); its columns are "
                    f"{', '.join(header)}.")
  columns = list(zip(*body)) if body else [() for _ in header]
  features, bad = [], []
  for name, cells in zip(header, columns):
    if name == label_column:
      continue
    try:
      features.append([float(c) if c.strip() else np.nan for c in cells])
    except ValueError:
      bad.append(name)
  if bad:
    raise UserError(f"{path} has non-numeric columns {', '.join(bad)}: "
                    "encode them as numbers, drop them, or name the label "
                    "column in data.label_column.")
  x = np.asarray(features, np.float32).T.reshape(len(body), len(features))
  labels, names = None, ()
  if label_column:
    cells = np.asarray(columns[header.index(label_column)])
    try:
      values = cells.astype(np.float64)
    except ValueError:
      values = cells
    labels, names = _labels(values)
  return Examples(x, labels, names, path)


def sklearn_dataset(name: str) -> Examples:
  """A dataset bundled with scikit-learn (no download).

  `digits` becomes 8x8x1 uint8 images (0..16 scaled to 0..255, rounded);
  the others are float32 tables. Class names are scikit-learn's
  (`target_names`).
  """
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  if name not in SKLEARN:
    raise UserError(f"data.name={name!r} is not a bundled scikit-learn "
                    f"dataset; known: {', '.join(SKLEARN)}.")
  bunch = getattr(datasets, f"load_{name}")()
  names = tuple(str(n) for n in bunch.target_names)
  y = np.asarray(bunch.target, np.int32)
  if name == "digits":
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  else:
    x = np.asarray(bunch.data, np.float32)
  return Examples(x, y, names, f"scikit-learn {name}")


def read_path(source: str, path: str, label_column: str = "") -> Examples:
  """The examples of a file or folder source (`npz`, `images`, `csv`)."""
  if source == "npz":
    return read_npz(path)
  if source == "images":
    return read_images(path)
  if source == "csv":
    return read_csv(path, label_column)
  raise UserError(f"data.source={source!r} reads no path; path sources are "
                  "npz, images and csv.")


def guess_source(path: str) -> str:
  """The path source that reads `path`: a folder, .csv, or .npz/.npy."""
  if os.path.isdir(path):
    return "images"
  if path.lower().endswith(".csv"):
    return "csv"
  if path.lower().endswith((".npz", ".npy")):
    return "npz"
  raise UserError(f"Cannot tell what {path} holds: give a folder of images, "
                  "a .csv, or a .npz/.npy file.")


# ----------------------------------------------------------------------------
# tensorflow-datasets.


def _data_dir(config) -> str | None:
  return config.data_dir or os.environ.get("TFDS_DATA_DIR") or None


def tfds_builder(config):
  """A prepared tfds builder of `data.name`, or a UserError saying what to do."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = _data_dir(config)
  try:
    builder = tfds.builder(config.name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(
        f"Unknown dataset {config.name!r}: data.name must be a "
        "tensorflow-datasets image dataset such as 'mnist', "
        "'fashion_mnist' or 'cifar10' (for your own data set data.source to "
        "npz, images, csv or sklearn).") from None
  if "image" not in builder.info.features:
    raise UserError(f"Dataset {config.name!r} has no 'image' feature; "
                    "vae_jax reads tfds image datasets (tables: "
                    "data.source=csv or npz).")
  if builder.is_prepared():
    return _check_splits(builder, config)
  where = data_dir or "the default ~/tensorflow_datasets"
  fix = (f"point TFDS_DATA_DIR (or --config.data.data_dir) at a directory "
         f"that holds a prepared copy of {config.name!r}")
  if not config.download:
    raise UserError(f"Dataset {config.name!r} is not prepared in {where} and "
                    f"data.download is off: {fix}.")
  if not _online():
    raise UserError(f"Dataset {config.name!r} is not prepared in {where} and "
                    f"this machine cannot reach {_TFDS_HOST} to download it: "
                    f"{fix}.")
  logging.info("Dataset %s is not in %s: downloading it.", config.name, where)
  root = data_dir or os.path.expanduser("~/tensorflow_datasets")
  before = _entries(root, config.name)
  try:
    _hide_gpus_from_tf()
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    for path in _entries(root, config.name) - before:  # Partial files.
      shutil.rmtree(path, ignore_errors=True)
    raise UserError(
        f"Dataset {config.name!r} is not prepared in {where} and could not be "
        f"downloaded ({type(e).__name__}): {fix}.") from None
  return _check_splits(builder, config)


def _hide_gpus_from_tf() -> None:
  """Imports TensorFlow (seconds: only where tf.data runs) with no GPU: the
  accelerators are JAX's."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")


# TFDS downloads through its Google Cloud Storage mirror first.
_TFDS_HOST = "storage.googleapis.com"


def _online(timeout: float = 5.0) -> bool:
  """Whether TFDS's download host answers within `timeout` seconds."""
  try:
    socket.create_connection((_TFDS_HOST, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


def _entries(root: str, name: str) -> set[str]:
  """The files and folders a download of `name` writes into (two levels)."""
  out = set()
  for top in (os.path.join(root, "downloads"), os.path.join(root, name)):
    if os.path.isdir(top):
      out.update(os.path.join(top, e) for e in os.listdir(top))
  return out


def _check_splits(builder, config):
  for split in (config.train_split, config.eval_split):
    for part in split.split("+"):
      base = part.split("[")[0].strip()
      if base not in builder.info.splits:
        raise UserError(f"Dataset {config.name!r} has no split {base!r}; it "
                        f"has {', '.join(builder.info.splits)}.")
    _read_instructions(builder, split)
  return builder


def _read_instructions(builder, split: str) -> list[Any]:
  """`split`'s parts as tfds resolves them (absolute `from_`/`to`, None for
  the ends), or a UserError if it is malformed or holds no example."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  name = builder.info.name
  try:
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(
        builder.info.splits)
  except (ValueError, AssertionError, NotImplementedError) as e:
    reason = (str(e).splitlines() or [type(e).__name__])[-1].rstrip(".")
    raise UserError(f"Split {split!r} of dataset {name!r} is not a tfds "
                    "split such as 'train', 'test[:1000]' or 'train[:10%]' "
                    f"({reason}).") from None
  for part in parts:
    total = builder.info.splits[part.splitname].num_examples
    stop = total if part.to is None else part.to
    if stop <= (part.from_ or 0):
      raise UserError(f"Split {split!r} of dataset {name!r} holds no "
                      f"example ({part.splitname} has {total}).")
  return parts


# Where decoded tfds splits are kept (`read_tfds`): $VAE_JAX_CACHE_DIR, else
# $XDG_CACHE_HOME/vae_jax, else ~/.cache/vae_jax.
CACHE_ENV = "VAE_JAX_CACHE_DIR"


def cache_dir() -> str:
  """The directory of vae_jax's caches (see `CACHE_ENV`)."""
  if os.environ.get(CACHE_ENV):
    return os.environ[CACHE_ENV]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(base, "vae_jax")


def _tfds_cache_path(builder, split: str) -> str:
  """The cache file of `split` of the prepared dataset in
  `builder.data_dir`: named by a hash of that directory, the split and
  every file's name, size and modification time, so that a re-prepared or
  changed dataset is decoded again."""
  files = []
  for root, _, names in os.walk(builder.data_dir):
    for name in sorted(names):
      st = os.stat(os.path.join(root, name))
      files.append((os.path.relpath(os.path.join(root, name),
                                    builder.data_dir), st.st_size,
                    st.st_mtime_ns))
  key = json.dumps([os.path.abspath(builder.data_dir), split, sorted(files)])
  digest = hashlib.sha256(key.encode()).hexdigest()[:20]
  return os.path.join(cache_dir(), "tfds", f"{builder.info.name}-{digest}.npz")


# A split stored in one file whose decoded pixels take at most this many
# bytes is decoded and cached whole, and its slices ("train[:10%]") are cut
# from that copy: one decoding for every slice (MNIST's training set: 47
# MB). Other splits are decoded slice by slice: tf.data interleaves the
# files of a split in blocks, so a slice of the whole would not hold the
# examples tfds gives.
WHOLE_SPLIT_BYTES = 2**30


def read_tfds(builder, split: str) -> Examples:
  """One split of a prepared tfds image dataset, with its labels if any.

  `split` is tfds's split syntax ("train", "test[:1000]", "train[:10%]",
  "train[:50%]+test[-10%:]"); its slices are resolved as tfds resolves them
  (`tfds.core.ReadInstruction`, rounding to the closest example) and hold
  the same examples in the same order as `builder.as_dataset(split,
  shuffle_files=False)`.
  Decoding a split through tf.data takes seconds (MNIST's training set
  about 7 s on a 2-core CPU, most of it importing TensorFlow); the decoded
  arrays are kept in `cache_dir()` and read back (tens of milliseconds)
  while the prepared files are unchanged. A one-file split of at most
  `WHOLE_SPLIT_BYTES` of pixels is decoded whole, once for all its slices.
  A cache that cannot be written or read is skipped.

  Raises:
    UserError: `split` is not tfds split syntax, or names a split the
      dataset does not have, or a slice that holds no example.
  """
  parts = _read_instructions(builder, split)
  if len(parts) > 1 or not _decoded_whole(builder, parts[0].splitname):
    return _cached_decode(builder, split)  # Interleaved as tfds reads it.
  whole = _cached_decode(builder, parts[0].splitname)
  cut = slice(parts[0].from_, parts[0].to)
  # Copies: a slice does not keep the whole split in memory.
  x, y = whole.x[cut].copy(), None if whole.y is None else whole.y[cut].copy()
  return Examples(x, y, whole.class_names, f"{builder.info.name} {split}")


def _decoded_whole(builder, name: str) -> bool:
  """Whether split `name` is decoded whole (see `WHOLE_SPLIT_BYTES`)."""
  info = builder.info.splits[name]
  shape = builder.info.features["image"].shape
  return (len(info.shard_lengths) == 1 and None not in shape
          and info.num_examples * np.prod(shape) <= WHOLE_SPLIT_BYTES)


def _cached_decode(builder, split: str) -> Examples:
  """`_decode_tfds(builder, split)`, through the cache (`read_tfds`)."""
  path = _tfds_cache_path(builder, split)
  try:
    with np.load(path) as f:
      y = f["y"] if "y" in f else None
      return Examples(f["x"], y, tuple(str(c) for c in f["class_names"]),
                      str(f["where"]))
  except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
    pass  # Not cached yet, or unreadable (e.g. cut short): decode.
  examples = _decode_tfds(builder, split)
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.save_npz(path, x=examples.x,
                   class_names=np.array(examples.class_names, dtype=str),
                   where=examples.where,
                   **({} if examples.y is None else {"y": examples.y}))
  except OSError as e:
    logging.info("Not caching the decoded %s: %s", examples.where, e)
  return examples


def _decode_tfds(builder, split: str) -> Examples:
  """`split` of `builder`'s prepared dataset decoded by tf.data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  _hide_gpus_from_tf()
  ds = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
  arrays = tfds.as_numpy(ds)
  x = np.asarray(arrays["image"])
  name = builder.info.name
  if x.dtype != np.uint8:
    raise UserError(f"Dataset {name!r} images are {x.dtype}, not uint8 "
                    "pixels.")
  features = builder.info.features
  label = features["label"] if "label" in features.keys() else None
  if label is not None and hasattr(label, "names") and "label" in arrays:
    return Examples(x, np.asarray(arrays["label"], np.int32),
                    tuple(label.names), f"{name} {split}")
  return Examples(x, None, (), f"{name} {split}")
