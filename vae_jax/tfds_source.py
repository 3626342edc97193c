"""The tfds source: prepared tensorflow-datasets image datasets, decoded
once and kept in a cache (`read_tfds`), and what to do when a dataset is
missing (`tfds_builder`: download it, or one sentence saying where to point
TFDS_DATA_DIR)."""

import contextlib
import fcntl
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
from vae_jax.sources import Examples


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
  entries = []  # Not `files`: that names the module of atomic writes.
  for root, _, names in os.walk(builder.data_dir):
    for name in sorted(names):
      st = os.stat(os.path.join(root, name))
      entries.append((os.path.relpath(os.path.join(root, name),
                                      builder.data_dir), st.st_size,
                      st.st_mtime_ns))
  key = json.dumps([os.path.abspath(builder.data_dir), split,
                    sorted(entries)])
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
  """`_decode_tfds(builder, split)`, through the cache (`read_tfds`).

  Processes that miss the cache at the same time (the runs of a sweep's
  array job, tests) take turns: one decodes, the others wait for its file
  (an advisory `flock` beside it) instead of each importing TensorFlow and
  decoding the same split.
  """
  path = _tfds_cache_path(builder, split)
  if (examples := _read_cache(path)) is not None:
    return examples
  with _cache_lock(path):
    if (examples := _read_cache(path)) is not None:
      return examples  # Decoded by the process we waited for.
    examples = _decode_tfds(builder, split)
    _write_cache(path, examples)
  return examples


def _write_cache(path: str, examples: Examples) -> None:
  try:
    files.save_npz(path, x=examples.x,
                   class_names=np.array(examples.class_names, dtype=str),
                   where=examples.where,
                   **({} if examples.y is None else {"y": examples.y}))
  except OSError as e:
    logging.info("Not caching the decoded %s: %s", examples.where, e)


def _read_cache(path: str) -> Examples | None:
  """The decoded split cached at `path`; None if absent or unreadable."""
  try:
    with np.load(path) as f:
      y = f["y"] if "y" in f else None
      return Examples(f["x"], y, tuple(str(c) for c in f["class_names"]),
                      str(f["where"]))
  except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):
    return None  # Not cached yet, or unreadable (e.g. cut short).


@contextlib.contextmanager
def _cache_lock(path: str):
  """Holds an exclusive `flock` on `path`.lock; no lock where the cache
  directory cannot be written (the split is then decoded uncached)."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    f = open(path + ".lock", "a")  # pylint: disable=consider-using-with
  except OSError:
    yield
    return
  with f:
    locked = _flock(f, path)
    try:
      yield
    finally:
      if locked:
        fcntl.flock(f, fcntl.LOCK_UN)


def _flock(f, path: str) -> bool:
  """Takes an exclusive `flock` on `f`, waiting for its holder; False where
  the filesystem has no flock (some network filesystems): no turns then."""
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except BlockingIOError:
    logging.info("Waiting for another process to decode into %s.", path)
  except OSError:
    return False
  try:
    fcntl.flock(f, fcntl.LOCK_EX)
    return True
  except OSError:
    return False


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
