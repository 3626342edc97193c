"""Readers of every data source: arrays and labels in host memory.

Each reader returns `Examples` (`x` `[N, *event]`, labels `y` `[N]` or
None, the class names) exactly as stored: uint8 pixels stay uint8, table
columns become float32. What a run then does with them (class selection,
held-out test split, standardization, binarization, sharding) is the same
for every source and lives in `input_pipeline`.

Sources (`data.source`):
  tfds     any tensorflow-datasets image dataset, by `data.name`
           (`vae_jax.tfds_source`);
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
import os

import numpy as np

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
