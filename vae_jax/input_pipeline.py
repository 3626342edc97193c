"""Every data source through one pipeline, batched deterministically.

`sources` reads the examples and labels of a source (tfds, npz, a folder
of images, csv, scikit-learn); `load` then does what is the same for all:
the held-out test split of a source without one, class selection,
the checks of bad data, per-feature standardization of tables, the fixed
binarization of the test set, and the shards of the training split.

The whole split is held in host memory (MNIST: 47 MB as uint8), so batches
(`vae_jax.batching`) are gathered with numpy and the order is a pure function
of (seed, step):
nothing about the pipeline needs checkpointing, and a resumed run sees
exactly the batches the uninterrupted run would have seen.

Images stay uint8 until they reach the device; `preprocess` turns them into
floats inside the jitted step, drawing the dynamic binarization from the
step's key. Tables (examples that are vectors `[D]`) are float32,
standardized on the host. Labels never enter a training step: they travel
with the examples for evaluation (latent maps, anomaly detection).
"""

import dataclasses
import math

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import sources
from vae_jax import tfds_source
from vae_jax import splits
from vae_jax.errors import UserError

# How pixels become model inputs (`data.binarization`): a Bernoulli sample
# with p = pixel / 255, fresh each step ("dynamic") or fixed ("static");
# uniform dequantization of 8-bit pixels, y = (x + u) / 256 with u ~ U[0, 1)
# fresh each step ("dequantize": for continuous likelihoods, whose density
# of y then bounds the 8-bit data's bits, Theis et al. 2016); or x / 255
# ("none"). The test set gets one fixed sample, seeded by binarization_seed.
BINARIZATIONS = ("dynamic", "static", "dequantize", "none")


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset in host memory.

  The training split is cut into `data.num_shards` even shards; each
  `train` split (one per model of a group whose models select their own
  training classes, else one) holds this process's shards, numbered
  `shard_indices`, and their labels. With binarization "static" image shards
  are already binarized. `test_x` is the whole evaluation split, binarized
  with a fixed seed unless binarization is "none", so every run scores the
  same examples. `binarization` is what applies: always "none" for tables.
  """
  name: str  # the dataset, or the file or folder it came from
  kind: str  # "image" ([H, W, C] uint8 or float) or "table" ([D] float32)
  # One per model of a group with its own training classes, else one.
  train: tuple[splits.TrainSplit, ...]
  shard_indices: list[int]
  test_x: np.ndarray  # [N_test, *event]
  test_labels: np.ndarray | None  # [N_test] int32
  # data.validation_fraction of the training split (all classes), held out
  # from training; None without one.
  valid_x: np.ndarray | None
  valid_labels: np.ndarray | None
  class_names: tuple[str, ...]  # label i is class_names[i]; () unlabeled
  num_train_examples: int  # the first model's, over all shards
  binarization: str
  standardization: splits.Standardization | None
  test_split: str  # how the test split was obtained
  # Of the data as read (pixels / 255), before binarization: the smallest
  # and largest value, and whether every value is 0 or 1.
  value_range: tuple[float, float]
  is_binary: bool

  @property
  def train_shards(self) -> list[np.ndarray]:
    """This process's training shards (of the first model's split)."""
    return self.train[0].shards if self.train else []

  @property
  def train_labels(self) -> list[np.ndarray] | None:
    return self.train[0].labels if self.train else None

  @property
  def event_shape(self) -> tuple[int, ...]:
    return tuple(self.test_x.shape[1:])

  def bits_per_dim(self, nats: float, likelihood: str) -> float | None:
    """Nats per example as bits per dimension of the data, or None where
    they would not be bits of the data.

    Binary inputs under a Bernoulli likelihood, or 8-bit pixels under a
    discretized Gaussian: nats / (D ln 2). Dequantized 8-bit pixels under a continuous likelihood (a density of
    y = (x + u) / 256 on [0, 1)^D): nats / (D ln 2) + 8, the convention of
    the literature for 8-bit images (Theis et al. 2016: -log2 of the
    density of 256 y, which bounds the bits of the discrete x). Anything
    else (a density of pixels / 255, or of table rows) is not a number of
    bits of the data: None.
    """
    bits = nats / (self.num_dims * np.log(2.0))
    if likelihood == "bernoulli" and (
        self.binarization in ("dynamic", "static") or self.is_binary):
      return float(bits)
    if likelihood == "discretized_gaussian":  # Probabilities of 8-bit x.
      return float(bits)
    if likelihood != "bernoulli" and self.binarization == "dequantize":
      return float(bits + 8.0)
    return None

  def units(self, likelihood: str, name: str = "nelbo") -> str:
    """How `name`'s nats and bits/dim are to be read (results' labels)."""
    if self.bits_per_dim(0.0, likelihood) is None:
      return (f"{name}: nats per example of a density of the inputs as "
              "given (pixels / 255 or standardized rows); no bits/dim: not "
              "a code length of the data")
    if likelihood == "bernoulli":
      return (f"{name}: nats per example; bits_per_dim = {name} / (D ln 2) "
              "of the binary data")
    if likelihood == "discretized_gaussian":
      return (f"{name}: nats per example of the 8-bit data (a discretized "
              f"Gaussian over the 256 levels); bits_per_dim = {name} / "
              "(D ln 2)")
    return (f"{name}: nats per example of the density of the dequantized "
            "inputs (x + u) / 256; bits_per_dim = nats / (D ln 2) + 8, bits "
            "of the 8-bit data")

  @property
  def num_dims(self) -> int:
    return math.prod(self.event_shape)

  def about(self) -> dict[str, str | int]:
    """Labels for results: the data, the test split, its size."""
    out = {"data": self.name, "split": self.test_split,
           "num_examples": len(self.test_x)}
    if self.standardization is not None:
      out["standardization"] = ("per feature, with the training split's "
                                "mean and std (standardization.json)")
    return out


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for a data config that cannot work (no data read)."""
  if config.source not in sources.SOURCES:
    raise UserError(f"Unknown data.source {config.source!r}; known: "
                    f"{', '.join(sources.SOURCES)}.")
  if config.binarization not in BINARIZATIONS:
    raise UserError(f"Unknown data.binarization {config.binarization!r}; "
                    f"known: {', '.join(BINARIZATIONS)}.")
  if config.num_shards < 1:
    raise UserError(f"data.num_shards must be >= 1, got {config.num_shards}.")
  if not 0 < config.test_fraction < 1:
    raise UserError(f"data.test_fraction must be in (0, 1), got "
                    f"{config.test_fraction}.")
  if not 0 <= config.validation_fraction < 1:
    raise UserError(f"data.validation_fraction must be in [0, 1), got "
                    f"{config.validation_fraction}.")
  if config.source in ("npz", "images", "csv") and not config.path:
    raise UserError(f"data.source={config.source!r} needs data.path, the "
                    "file or folder to read.")
  if config.source == "sklearn" and config.name not in sources.SKLEARN:
    raise UserError(f"data.name={config.name!r} is not a bundled "
                    "scikit-learn dataset; known: "
                    f"{', '.join(sources.SKLEARN)}.")
  if config.label_column and config.source != "csv":
    raise UserError("data.label_column applies to data.source='csv' only.")


def _read(config: ml_collections.ConfigDict, train: bool
          ) -> tuple[sources.Examples | None, sources.Examples, int, str]:
  """(train or None, test, number of training examples, test split label)."""
  if config.source == "tfds":
    builder = tfds_source.tfds_builder(config)
    test = tfds_source.read_tfds(builder, config.eval_split)
    if not train:
      return (None, test,
              builder.info.splits[config.train_split].num_examples,
              config.eval_split)
    return (tfds_source.read_tfds(builder, config.train_split), test, 0,
            config.eval_split)
  if config.source == "sklearn":
    whole = sources.sklearn_dataset(config.name)
  else:
    whole = sources.read_path(config.source, config.path,
                              config.label_column)
  splits.check(whole, "whole")  # Indices in messages are the file's.
  if config.test_path:
    test = sources.read_path(config.source, config.test_path,
                             config.label_column)
    splits.check(test, "whole")
    splits.merge_classes(whole, test)
    return whole, test, 0, f"test ({config.test_path})"
  train_ex, test = splits.hold_out(whole, config.test_fraction,
                                   config.split_seed)
  return train_ex, test, 0, (f"held-out {config.test_fraction:.0%} of the "
                             f"examples (data.split_seed={config.split_seed})")


def load(config: ml_collections.ConfigDict, *, train: bool = True,
         process_index: int = 0, process_count: int = 1,
         standardization: splits.Standardization | None = None,
         train_classes: list[str] | None = None) -> Dataset:
  """Loads the (validated) `data` section's dataset.

  First `data.validation_fraction` of the training split (all classes) is
  held out as the validation split. Then the training split (after
  `data.train_classes`) is cut into S = `data.num_shards` even, contiguous
  shards; process p of P holds shards [p S / P, (p + 1) S / P), so the
  global batch of every step is the same whatever the number of processes.
  With `train` False no training shard is made, and no training example of
  a tfds dataset is read unless a validation split is asked for;
  `num_train_examples` then comes from the dataset's metadata.

  Args:
    config: the `data` section.
    train: whether the training split is needed.
    process_index, process_count: this process, of how many.
    standardization: a table's saved statistics (from the workdir); None
      fits them on the training split.
    train_classes: one `data.train_classes` per model of a group whose
      models train on their own classes; default `[data.train_classes]`.

  Raises:
    UserError: for bad data (see `sources`), an empty split, NaN or inf
      values, a class that does not occur, examples whose shapes differ
      between the splits.
  """
  if config.num_shards % process_count:
    raise UserError(f"data.num_shards={config.num_shards} does not divide "
                    f"among the {process_count} processes; use a multiple of "
                    f"{process_count}.")
  train_classes = train_classes or [config.train_classes]
  train_ex, test, num_train, test_split = _read(
      config, train or config.validation_fraction > 0)
  valid = None
  if train_ex is not None and config.validation_fraction > 0:
    train_ex, valid = splits.hold_out(
        train_ex, config.validation_fraction, [config.split_seed, 1],
        "data.validation_fraction", "validation")
  test = splits.select(test, config.test_classes, "data.test_classes")
  splits.check(test, "test")
  if train_ex is not None and train_ex.x.shape[1:] != test.x.shape[1:]:
    raise UserError(f"The training examples of {train_ex.where} are "
                    f"{train_ex.x.shape[1:]} but the test examples of "
                    f"{test.where} are {test.x.shape[1:]}.")
  if test.x.ndim not in (2, 4):
    raise UserError(f"{test.where} holds examples of shape "
                    f"{test.x.shape[1:]}; give images [H, W] or [H, W, C], "
                    "or table rows [D].")
  kind = "table" if test.x.ndim == 2 else "image"
  binarization = config.binarization if kind == "image" else "none"
  if kind == "table" and config.binarization != "none":
    logging.info("data.binarization=%s does not apply to a table; its rows "
                 "are used as they are.", config.binarization)

  if kind == "table" and config.standardize:
    if len(set(train_classes)) > 1:
      raise UserError("Models that train on different classes of a "
                      "standardized table cannot share a group (each would "
                      "standardize with its own statistics): set "
                      "sweep.max_group_size=1 or data.standardize=False.")
    if standardization is None:
      if train_ex is None:
        raise UserError("A table's standardization needs its training "
                        "split or its saved statistics.")
      standardization = splits.Standardization.fit(splits.select(
          train_ex, train_classes[0], "data.train_classes").x)
    if standardization.mean.shape != test.x.shape[1:]:
      raise UserError(f"The saved standardization has "
                      f"{standardization.mean.shape[0]} features but "
                      f"{test.where} has {test.x.shape[1]}.")
    for ex in (test, train_ex, valid):
      if ex is not None:
        ex.x = standardization.apply(ex.x)
  else:
    standardization = None

  arrays = [ex.x for ex in (test, train_ex, valid) if ex is not None]
  top = 255.0 if test.x.dtype == np.uint8 else 1.0
  value_range = (min(float(x.min()) for x in arrays) / top,
                 max(float(x.max()) for x in arrays) / top)
  is_binary = all(np.all((x == 0) | (x == top)) for x in arrays)
  if binarization == "dequantize" and test.x.dtype != np.uint8:
    raise UserError(f"data.binarization='dequantize' needs 8-bit pixels "
                    f"(uint8), but {data_name(config)} holds "
                    f"{test.x.dtype} values: use data.binarization='none'.")
  if binarization != "none" and not 0 <= value_range[0] <= value_range[1] <= 1:
    raise UserError(f"data.binarization={binarization!r} draws pixels with "
                    f"p = x, but {data_name(config)} spans "
                    f"[{value_range[0]:.4g}, {value_range[1]:.4g}], not "
                    "[0, 1]: rescale the data, or use "
                    "data.binarization='none'.")

  parts, indices = (), []
  if train:
    per_process = config.num_shards // process_count
    indices = list(range(process_index * per_process,
                         (process_index + 1) * per_process))
    parts = tuple(splits.shard(train_ex, c, config.num_shards, indices)
                  for c in train_classes)
    if binarization == "static":
      parts = tuple(dataclasses.replace(p, shards=[
          binarize(x, config.binarization_seed + 1 + i)
          for x, i in zip(p.shards, indices)]) for p in parts)
    num_train = parts[0].num_examples
  test_x, valid_x = test.x, None if valid is None else valid.x
  if binarization != "none":  # Fixed samples: every run scores the same.
    fix = dequantize if binarization == "dequantize" else binarize
    test_x = fix(test_x, config.binarization_seed)
    if valid_x is not None:
      valid_x = fix(valid_x, [config.binarization_seed, 1])
  return Dataset(
      name=data_name(config), kind=kind, train=parts, shard_indices=indices,
      test_x=test_x, test_labels=test.y, valid_x=valid_x,
      valid_labels=None if valid is None else valid.y,
      class_names=test.class_names, num_train_examples=num_train,
      binarization=binarization, standardization=standardization,
      test_split=test_split, value_range=value_range, is_binary=is_binary)


def data_name(config: ml_collections.ConfigDict) -> str:
  """What results call the data: the dataset's name, or the file's path."""
  return config.name if config.source in ("tfds", "sklearn") else config.path


def check_likelihood(data: Dataset, likelihood: str, is_vae: bool) -> None:
  """Refuses a Bernoulli likelihood on data it is not a distribution of.

  A Bernoulli p(x|z) needs x in [0, 1]; for a VAE, whose -ELBO is reported
  in nats, also binary x: gray values make it an unnormalized density
  (Loaiza-Ganem and Cunningham 2019), so -ELBO would bound nothing.
  Autoencoders may use it as a cross-entropy reconstruction loss on gray
  values.
  """
  if likelihood == "discretized_gaussian" and data.test_x.dtype != np.uint8:
    raise UserError(
        "model.likelihood='discretized_gaussian' is a distribution over the "
        f"256 levels of 8-bit pixels, but {data.name} holds "
        f"{data.test_x.dtype} values: give uint8 images, or use "
        "model.likelihood='gaussian'.")
  if likelihood != "bernoulli":
    return
  lo, hi = data.value_range
  if lo < 0 or hi > 1:
    raise UserError(
        f"model.likelihood='bernoulli' needs data in [0, 1], but {data.name} "
        f"spans [{lo:.4g}, {hi:.4g}]; use model.likelihood='gaussian' (or "
        "'auto').")
  if is_vae and data.binarization in ("none", "dequantize") and (
      not data.is_binary or data.binarization == "dequantize"):
    raise UserError(
        f"A VAE's Bernoulli likelihood needs binary data, but {data.name} "
        "has values strictly between 0 and 1 and data.binarization='none', "
        "so its -ELBO would bound nothing: use data.binarization='dynamic' "
        "(or 'static'), or model.likelihood='gaussian'.")


def to_float(x: np.ndarray) -> np.ndarray:
  """Host examples as model inputs: uint8 pixels / 255, floats as they are."""
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0
  return np.asarray(x, np.float32)


def binarize(images: np.ndarray, seed) -> np.ndarray:
  """A fixed Bernoulli sample of images, p = pixel / 255 (uint8, giving
  {0, 255}) or p = x (floats in [0, 1], giving {0, 1}), in x's dtype."""
  rng = np.random.default_rng(seed)
  probs = to_float(images)
  on = rng.random(images.shape, dtype=np.float32) < probs
  top = np.uint8(255) if images.dtype == np.uint8 else np.float32(1)
  return np.where(on, top, images.dtype.type(0)).astype(images.dtype)


def dequantize(images: np.ndarray, seed) -> np.ndarray:
  """A fixed uniform dequantization of uint8 images: float32
  y = (x + u) / 256, u ~ U[0, 1) on a grid of 2^-16 (exact in float32)
  (Theis, van den Oord and Bethge 2016).
  A density p(y) on [0, 1)^D gives the 8-bit data at most
  -log2 p(y) / D + 8 bits per dimension (`bits_per_dim`)."""
  u = np.random.default_rng(seed).random(images.shape, np.float32)
  return (images.astype(np.float32) + _on_grid(u)) / 256.0


def _on_grid(u):
  # u rounded down to a multiple of 2^-16: x + u and (x + u) / 256 are then
  # exact in float32, so y stays in x's bin [x / 256, (x + 1) / 256).
  return jnp.floor(u * 65536.0) / 65536.0 if isinstance(u, jax.Array) else (
      np.floor(u * np.float32(65536.0)) / np.float32(65536.0))


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
  if images.dtype != jnp.uint8:  # Floats in [0, 1], or standardized rows.
    if binarization == "dynamic":
      return jax.random.bernoulli(rng, images).astype(jnp.float32)
    return images.astype(jnp.float32)
  if binarization == "dynamic":
    return dynamic_binarize(images, rng)
  if binarization == "dequantize":
    u = _on_grid(jax.random.uniform(rng, images.shape, jnp.float32))
    return (images.astype(jnp.float32) + u) / 256.0
  return images.astype(jnp.float32) / 255.0
