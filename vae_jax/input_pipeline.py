"""Image datasets from tensorflow-datasets, batched deterministically.

The whole split is held in host memory as uint8 (MNIST: 47 MB), so batches
are gathered with numpy and the order is a pure function of
(seed, step): nothing about the pipeline needs checkpointing, and a resumed
run sees exactly the batches the uninterrupted run would have seen.

Pixels stay uint8 until they reach the device; `preprocess` turns them into
floats inside the jitted step, drawing the dynamic binarization from the
step's key.
"""

import dataclasses
import math
import os

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax.errors import UserError

BINARIZATIONS = ("dynamic", "static", "none")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset in host memory.

  The training split is cut into `data.num_shards` even shards (tfds
  `even_splits`); `train_shards` holds this process's shards, numbered
  `shard_indices`. With binarization "static" they are already binarized to
  {0, 255}. `test_images` is the whole evaluation split, binarized to
  {0, 255} with a fixed seed unless binarization is "none", so every run
  scores the same images.
  """
  name: str
  train_shards: list[np.ndarray]  # each [N_shard, H, W, C] uint8
  shard_indices: list[int]
  test_images: np.ndarray  # [N_test, H, W, C] uint8
  num_train_examples: int  # over all shards
  binarization: str

  @property
  def event_shape(self) -> tuple[int, ...]:
    return tuple(self.test_images.shape[1:])

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for a data config that cannot work."""
  if config.binarization not in BINARIZATIONS:
    raise UserError(f"Unknown data.binarization {config.binarization!r}; "
                    f"known: {', '.join(BINARIZATIONS)}.")
  if config.num_shards < 1:
    raise UserError(f"data.num_shards must be >= 1, got {config.num_shards}.")


def _data_dir(config: ml_collections.ConfigDict) -> str | None:
  return config.data_dir or os.environ.get("TFDS_DATA_DIR") or None


def _builder(config: ml_collections.ConfigDict):
  """Returns a prepared tfds builder, or raises UserError saying what to do."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  data_dir = _data_dir(config)
  try:
    builder = tfds.builder(config.name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise UserError(
        f"Unknown dataset {config.name!r}: data.name must be a "
        "tensorflow-datasets image dataset such as 'mnist', "
        "'fashion_mnist' or 'cifar10'.") from None
  if "image" not in builder.info.features:
    raise UserError(f"Dataset {config.name!r} has no 'image' feature; "
                    "vae_jax models images.")
  if builder.is_prepared():
    return builder
  where = data_dir or "the default ~/tensorflow_datasets"
  fix = (f"point TFDS_DATA_DIR (or --config.data.data_dir) at a directory "
         f"that holds a prepared copy of {config.name!r}")
  if not config.download:
    raise UserError(f"Dataset {config.name!r} is not prepared in {where} and "
                    f"data.download is off: {fix}.")
  logging.info("Dataset %s is not in %s: downloading it (offline, TFDS "
               "gives up after its retries, about 4 minutes; to skip them, "
               "%s).", config.name, where, fix)
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(
        f"Dataset {config.name!r} is not prepared in {where} and could not be "
        f"downloaded ({type(e).__name__}): {fix}.") from None
  return builder


def _load_split(builder, split: str) -> np.ndarray:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  ds = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
  return np.asarray(tfds.as_numpy(ds)["image"])


def binarize(images: np.ndarray, seed: int) -> np.ndarray:
  """A fixed Bernoulli sample of uint8 images, as uint8 in {0, 255}."""
  rng = np.random.default_rng(seed)
  probs = images.astype(np.float32) / 255.0
  return np.where(rng.random(images.shape, dtype=np.float32) < probs,
                  np.uint8(255), np.uint8(0))


def load(config: ml_collections.ConfigDict, *, train: bool = True,
         process_index: int = 0, process_count: int = 1) -> Dataset:
  """Loads the (validated) `data` section's dataset.

  Process p of P reads shards [p S / P, (p + 1) S / P) of the S =
  `data.num_shards` shards of the training split, so the global batch of
  every step is the same whatever the number of processes. With `train`
  False no training example is read (evaluation); `num_train_examples`
  still counts them, from the dataset's metadata.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")  # The accelerators are JAX's.
  builder = _builder(config)
  for split in (config.train_split, config.eval_split):
    base = split.split("[")[0]
    if base not in builder.info.splits:
      raise UserError(f"Dataset {config.name!r} has no split {base!r}; it has "
                      f"{', '.join(builder.info.splits)}.")
  if config.num_shards % process_count:
    raise UserError(f"data.num_shards={config.num_shards} does not divide "
                    f"among the {process_count} processes; use a multiple of "
                    f"{process_count}.")
  num_train = builder.info.splits[config.train_split].num_examples
  splits = tfds.even_splits(config.train_split, n=config.num_shards)
  per_process = config.num_shards // process_count
  indices = (list(range(process_index * per_process,
                        (process_index + 1) * per_process)) if train else [])
  shards = [_load_split(builder, splits[i]) for i in indices]
  test = _load_split(builder, config.eval_split)
  if test.dtype != np.uint8:
    raise UserError(f"Dataset {config.name!r} images are {test.dtype}, "
                    "not uint8 pixels.")
  if config.binarization == "static":
    shards = [binarize(x, config.binarization_seed + 1 + i)
              for x, i in zip(shards, indices)]
  if config.binarization != "none":
    test = binarize(test, config.binarization_seed)
  return Dataset(name=config.name, train_shards=shards, shard_indices=indices,
                 test_images=test, num_train_examples=num_train,
                 binarization=config.binarization)


def dynamic_binarize(images: jax.Array, rng: jax.Array) -> jax.Array:
  """A fresh Bernoulli sample of uint8 images, with p = pixel / 255.

  Threefry random bits are the dearest part of a small model's step on a
  CPU, so each 32-bit word serves two pixels: pixel v is 1 when a 16-bit
  uniform u satisfies u < ceil(v * 2^16 / 255). Then P(1) = v / 255 exactly
  for v = 0 and 255 and to within 2^-16 for the others.

  Args:
    images: `[B, *event]` uint8.
    rng: a PRNG key.

  Returns:
    `[B, *event]` float32 in {0, 1}.
  """
  flat = images.reshape(images.shape[0], -1)
  num_words = -(-flat.shape[1] // 2)
  words = jax.random.bits(rng, (flat.shape[0], num_words), jnp.uint32)
  u = jax.lax.bitcast_convert_type(words, jnp.uint16).reshape(
      flat.shape[0], 2 * num_words)[:, :flat.shape[1]]
  threshold = (flat.astype(jnp.int32) * 65536 + 254) // 255
  return (u.astype(jnp.int32) < threshold).astype(jnp.float32).reshape(
      images.shape)


def preprocess(images: jax.Array, rng: jax.Array,
               binarization: str) -> jax.Array:
  """uint8 pixels to float32 model inputs, on device.

  "dynamic" draws a fresh Bernoulli sample with p = pixel / 255 (the MNIST
  likelihood protocol, see `dynamic_binarize`); otherwise pixels are scaled
  to [0, 1] (already {0, 1} for "static" and for the fixed binarized test
  set).
  """
  if binarization == "dynamic":
    return dynamic_binarize(images, rng)
  return images.astype(jnp.float32) / 255.0


class ShardBatches:
  """One shard's part of every step's batch, a function of (seed, step).

  Epoch e visits the shard in the order `permutation(seed, e, shard)`;
  the last incomplete batch of an epoch is dropped, so every step has the
  same shape.
  """

  def __init__(self, images: np.ndarray, local_batch_size: int,
               steps_per_epoch: int, seed: int, shard_index: int = 0):
    self.images = images
    self.local_batch_size = local_batch_size
    self.steps_per_epoch = steps_per_epoch
    self.seed = seed
    self.shard_index = shard_index
    self._perm_epoch = -1
    self._perm = None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:
      rng = np.random.default_rng([self.seed, epoch, self.shard_index])
      self._perm = rng.permutation(len(self.images))
      self._perm_epoch = epoch
    return self._perm

  def indices(self, step: int) -> np.ndarray:
    epoch, pos = divmod(step, self.steps_per_epoch)
    b = self.local_batch_size
    return self._permutation(epoch)[pos * b:(pos + 1) * b]

  def chunk(self, start_step: int, num_steps: int,
            chunk_len: int) -> np.ndarray:
    """Batches of steps [start, start + num_steps), zero-padded to chunk_len.

    Returns:
      `[chunk_len, local_batch, H, W, C]` uint8.
    """
    out = np.zeros((chunk_len, self.local_batch_size, *self.images.shape[1:]),
                   self.images.dtype)
    for i in range(num_steps):
      out[i] = self.images[self.indices(start_step + i)]
    return out


def eval_batches(images: np.ndarray,
                 batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits `images` into equal batches, padding the last one.

  Returns:
    images `[num_batches, batch_size, ...]` and a float mask
    `[num_batches, batch_size]` that is 1 for real examples, so per-example
    metrics summed under the mask count every example exactly once.
  """
  n = len(images)
  num_batches = -(-n // batch_size)
  padded = np.zeros((num_batches * batch_size, *images.shape[1:]),
                    images.dtype)
  padded[:n] = images
  mask = np.zeros(num_batches * batch_size, np.float32)
  mask[:n] = 1.0
  return (padded.reshape(num_batches, batch_size, *images.shape[1:]),
          mask.reshape(num_batches, batch_size))


class TrainBatches:
  """This process's part of the global batch: its shards' parts, in order.

  The global batch of a step is the concatenation over all `data.num_shards`
  shards of `batch_size / num_shards` examples each; processes hold
  consecutive shards, so concatenating the processes' local batches in
  process order gives the same global batch for any number of processes.
  """

  def __init__(self, shards: list[np.ndarray], shard_indices: list[int],
               per_shard_batch: int, steps_per_epoch: int, seed: int):
    self.shards = [ShardBatches(x, per_shard_batch, steps_per_epoch, seed, i)
                   for x, i in zip(shards, shard_indices)]

  def chunk(self, start_step: int, num_steps: int,
            chunk_len: int) -> np.ndarray:
    """`[chunk_len, local_batch, *event]` uint8, zero-padded after num_steps."""
    return np.concatenate(
        [s.chunk(start_step, num_steps, chunk_len) for s in self.shards],
        axis=1)
