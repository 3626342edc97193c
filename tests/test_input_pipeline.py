"""Tests for vae_jax.input_pipeline on small synthetic uint8 images.

No tensorflow-datasets: the batching, binarization and preprocessing are
pure numpy/JAX functions of in-memory arrays. Images are labelled by their
pixel value (image i is filled with i + 1), so a batch tells which examples
it holds and zero padding is distinguishable from every real example.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import batching
from vae_jax import config_lib
from vae_jax import input_pipeline
from vae_jax.errors import UserError


def _labelled_images(n: int, shape=(2, 3, 1)) -> np.ndarray:
  """[n, *shape] uint8 with image i filled with i + 1 (n < 255)."""
  return np.broadcast_to(
      np.arange(1, n + 1, dtype=np.uint8).reshape(n, *[1] * len(shape)),
      (n, *shape)).copy()


def _labels(batch: np.ndarray) -> np.ndarray:
  """The example index of each image in `[..., H, W, C]` (-1 for padding)."""
  first = batch.reshape(*batch.shape[:-3], -1)
  assert np.all(first == first[..., :1]), "an image mixes examples"
  return first[..., 0].astype(np.int64) - 1


# --- eval_batches -------------------------------------------------------------


@pytest.mark.parametrize("n,batch_size", [(10, 4), (8, 4), (3, 5), (1, 1)])
def test_eval_batches_cover_every_example_once(n, batch_size):
  images = _labelled_images(n)
  batches, mask = batching.eval_batches(images, batch_size)
  num_batches = math.ceil(n / batch_size)
  assert batches.shape == (num_batches, batch_size, 2, 3, 1)
  assert batches.dtype == np.uint8
  assert mask.shape == (num_batches, batch_size)
  assert set(np.unique(mask)) <= {0.0, 1.0}
  assert mask.sum() == n
  labels = _labels(batches)
  real = labels[mask == 1]
  np.testing.assert_array_equal(np.sort(real), np.arange(n))
  # Everything under mask 0 is zero padding, not a repeated example.
  np.testing.assert_array_equal(labels[mask == 0], -1)
  assert (mask == 0).sum() == num_batches * batch_size - n


# --- ShardBatches -------------------------------------------------------------

_N, _B, _STEPS_PER_EPOCH = 20, 3, 6  # 18 of 20 examples used per epoch.


def _train_batches(seed=0, shard_index=0, images=None):
  images = _labelled_images(_N) if images is None else images
  return batching.ShardBatches(images, _B, _STEPS_PER_EPOCH, seed=seed,
                                     shard_index=shard_index)


def test_train_batches_same_seed_and_step_give_same_indices():
  # A resumed run builds a fresh instance and may start mid-epoch, so the
  # order of queries must not matter either.
  steps = [0, 5, 6, 13, 2, 40, 7]
  a = _train_batches(seed=3)
  first = {s: a.indices(s).copy() for s in steps}
  b = _train_batches(seed=3)
  for s in reversed(steps):
    np.testing.assert_array_equal(b.indices(s), first[s])
  # Asking again after other epochs were visited gives the same answer.
  for s in steps:
    np.testing.assert_array_equal(a.indices(s), first[s])


def test_train_batches_one_epoch_is_distinct_examples():
  tb = _train_batches(seed=1)
  for epoch in range(3):
    steps = range(epoch * _STEPS_PER_EPOCH, (epoch + 1) * _STEPS_PER_EPOCH)
    idx = np.concatenate([tb.indices(s) for s in steps])
    assert all(len(tb.indices(s)) == _B for s in steps)
    assert len(idx) == _STEPS_PER_EPOCH * _B
    assert len(np.unique(idx)) == len(idx)
    assert idx.min() >= 0 and idx.max() < _N


def test_train_batches_epochs_and_seeds_change_the_order():
  tb = _train_batches(seed=0)
  epoch0 = np.concatenate([tb.indices(s) for s in range(_STEPS_PER_EPOCH)])
  epoch1 = np.concatenate(
      [tb.indices(s) for s in range(_STEPS_PER_EPOCH, 2 * _STEPS_PER_EPOCH)])
  assert not np.array_equal(epoch0, epoch1)
  other = _train_batches(seed=1)
  other0 = np.concatenate(
      [other.indices(s) for s in range(_STEPS_PER_EPOCH)])
  assert not np.array_equal(epoch0, other0)
  shard1 = _train_batches(seed=0, shard_index=1)
  assert not np.array_equal(
      epoch0, np.concatenate(
          [shard1.indices(s) for s in range(_STEPS_PER_EPOCH)]))


def test_train_batches_chunk():
  images = _labelled_images(_N)
  tb = _train_batches(seed=2, images=images)
  start, num_steps, chunk_len = 4, 3, 5  # Steps 4, 5, 6 cross an epoch.
  chunk = tb.chunk(start, num_steps, chunk_len)
  assert chunk.shape == (chunk_len, _B, 2, 3, 1)
  assert chunk.dtype == np.uint8
  fresh = _train_batches(seed=2, images=images)
  for i in range(num_steps):
    np.testing.assert_array_equal(chunk[i], images[fresh.indices(start + i)])
    np.testing.assert_array_equal(_labels(chunk[i]),
                                  fresh.indices(start + i))
  np.testing.assert_array_equal(chunk[num_steps:], 0)


def test_train_batches_chunk_is_the_same_whatever_the_chunking():
  # Resuming at another step boundary must not change the data: two chunks
  # of 4 equal one chunk of 8.
  whole = _train_batches(seed=5).chunk(3, 8, 8)
  later = _train_batches(seed=5).chunk(7, 4, 4)  # Fresh: as after a resume.
  earlier = _train_batches(seed=5).chunk(3, 4, 4)
  np.testing.assert_array_equal(whole, np.concatenate([earlier, later]))


# --- binarize -----------------------------------------------------------------


def test_binarize_values_and_determinism():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(16, 4, 4, 1), dtype=np.uint8)
  a = input_pipeline.binarize(images, seed=0)
  assert a.shape == images.shape and a.dtype == np.uint8
  assert set(np.unique(a)) <= {0, 255}
  np.testing.assert_array_equal(a, input_pipeline.binarize(images, seed=0))
  assert not np.array_equal(a, input_pipeline.binarize(images, seed=1))
  # Pixels 0 and 255 are certain.
  np.testing.assert_array_equal(a[images == 0], 0)
  np.testing.assert_array_equal(a[images == 255], 255)


@pytest.mark.parametrize("pixel", [0, 1, 64, 128, 200, 254, 255])
def test_binarize_mean_matches_probability(pixel):
  n = 40_000
  images = np.full((n // 16, 4, 4, 1), pixel, np.uint8)
  p = pixel / 255.0
  mean = (input_pipeline.binarize(images, seed=7) / 255.0).mean()
  se = math.sqrt(p * (1 - p) / n)
  assert abs(mean - p) <= 5 * se + 1e-12


# --- preprocess ---------------------------------------------------------------


@pytest.mark.parametrize("binarization", ["none", "static"])
def test_preprocess_scales_to_unit_interval(binarization):
  images = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
  x = input_pipeline.preprocess(images, jax.random.key(0), binarization)
  assert x.dtype == np.float32 and x.shape == images.shape
  np.testing.assert_allclose(x, images.astype(np.float64) / 255.0, rtol=1e-6)
  assert float(x.min()) == 0.0 and float(x.max()) == 1.0
  # No randomness: the key does not matter (and may be None).
  np.testing.assert_array_equal(
      x, input_pipeline.preprocess(images, None, binarization))


def test_preprocess_dynamic_is_a_bernoulli_sample():
  pixels = np.array([0, 51, 128, 230, 255], np.uint8)
  n = 8_000
  images = np.broadcast_to(pixels, (n, 1, 1, 5)).copy()
  x = np.asarray(input_pipeline.preprocess(images, jax.random.key(0),
                                           "dynamic"))
  assert x.dtype == np.float32 and x.shape == images.shape
  assert set(np.unique(x)) <= {0.0, 1.0}
  p = pixels / 255.0
  mean = x.reshape(n, 5).mean(0)
  se = np.sqrt(p * (1 - p) / n)
  np.testing.assert_array_less(np.abs(mean - p), 5 * se + 1e-12)


def test_preprocess_dynamic_depends_on_the_key():
  images = np.full((4, 8, 8, 1), 128, np.uint8)
  a = input_pipeline.preprocess(images, jax.random.key(0), "dynamic")
  b = input_pipeline.preprocess(images, jax.random.key(0), "dynamic")
  c = input_pipeline.preprocess(images, jax.random.key(1), "dynamic")
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_preprocess_dynamic_under_jit():
  # The train step runs it jitted with the binarization static.
  images = np.full((4, 8, 8, 1), 128, np.uint8)
  f = jax.jit(input_pipeline.preprocess, static_argnums=2)
  np.testing.assert_array_equal(
      f(images, jax.random.key(0), "dynamic"),
      input_pipeline.preprocess(images, jax.random.key(0), "dynamic"))


@pytest.mark.parametrize("overrides,match", [
    ({"binarization": "stochastic"}, "binarization"),
    ({"num_shards": 0}, "num_shards"),
    ({"source": "parquet"}, "Unknown data.source 'parquet'"),
    ({"test_fraction": 0.0}, r"test_fraction must be in \(0, 1\)"),
    ({"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
    ({"source": "npz"}, "needs data.path"),
    ({"source": "sklearn", "name": "mnist"}, "not a bundled scikit-learn"),
    ({"label_column": "y"}, "label_column applies to data.source='csv'"),
])
def test_validate_config_rejects_each_bad_field(overrides, match):
  config = config_lib.base().data
  input_pipeline.validate_config(config)
  config.update(overrides)
  with pytest.raises(UserError, match=match):
    input_pipeline.validate_config(config)


def test_train_batches_concatenate_shards_in_order():
  shards = [np.full((20, 2, 2, 1), v, np.uint8) for v in (1, 2, 3, 4)]
  both = batching.TrainBatches(shards, [0, 1, 2, 3], 3, 6, seed=0)
  first = batching.TrainBatches(shards[:2], [0, 1], 3, 6, seed=0)
  second = batching.TrainBatches(shards[2:], [2, 3], 3, 6, seed=0)
  chunk = both.chunk(4, 3, 5)
  assert chunk.shape == (5, 12, 2, 2, 1)
  # The global batch is the processes' local batches, in process order.
  np.testing.assert_array_equal(
      chunk, np.concatenate([first.chunk(4, 3, 5), second.chunk(4, 3, 5)], 1))
  np.testing.assert_array_equal(chunk[:3, :, 0, 0, 0],
                                np.repeat([[1, 2, 3, 4]], 3, 0).repeat(3, 1))


def test_dynamic_binarize_is_exact_at_the_extremes_and_keyed():
  images = jnp.asarray(
      np.tile(np.array([0, 255, 128], np.uint8), (64, 300)).reshape(64, 30, 30, 1))
  a = input_pipeline.dynamic_binarize(images, jax.random.key(3))
  b = input_pipeline.dynamic_binarize(images, jax.random.key(3))
  c = input_pipeline.dynamic_binarize(images, jax.random.key(4))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  a = np.asarray(a).reshape(64, -1)
  pixels = np.asarray(images).reshape(64, -1)
  assert np.all(a[pixels == 0] == 0) and np.all(a[pixels == 255] == 1)
  mid = a[pixels == 128]  # 19,200 draws with p = 128/255.
  assert abs(mid.mean() - 128 / 255) < 5 * np.sqrt(0.25 / mid.size)


def test_dequantize_keeps_each_pixel_in_its_bin():
  x = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(50, 0)
  y = input_pipeline.dequantize(x, 0)
  assert y.dtype == np.float32
  assert np.all(np.floor(y * 256) == x)  # y in [x / 256, (x + 1) / 256).
  np.testing.assert_array_equal(y, input_pipeline.dequantize(x, 0))
  # u ~ U[0, 1): its mean over the 12,800 pixels is 1/2.
  assert abs(np.mean(y * 256 - x) - 0.5) < 0.01
  on_device = input_pipeline.preprocess(jnp.asarray(x), jax.random.key(0),
                                        "dequantize")
  assert np.all(np.floor(np.asarray(on_device) * 256) == x)


def _dataset(binarization, is_binary=False, num_dims=784):
  return input_pipeline.Dataset(
      name="d", kind="image", train=(), shard_indices=[],
      test_x=np.zeros((1, num_dims, 1, 1), np.uint8), test_labels=None,
      valid_x=None, valid_labels=None, class_names=(), num_train_examples=0,
      binarization=binarization, standardization=None, test_split="test",
      value_range=(0.0, 1.0), is_binary=is_binary)


def test_bits_per_dim_only_where_nats_are_code_lengths():
  nats = 784 * math.log(2) * 0.25  # 0.25 bits per dimension.
  assert _dataset("dynamic").bits_per_dim(nats, "bernoulli") == (
      pytest.approx(0.25))
  assert _dataset("none", is_binary=True).bits_per_dim(
      nats, "bernoulli") == pytest.approx(0.25)
  # A density of y = (x + u) / 256 on [0, 1)^D: + log2(256) = 8 bits for
  # the 8-bit x (Theis et al. 2016).
  assert _dataset("dequantize").bits_per_dim(nats, "gaussian") == (
      pytest.approx(8.25))
  # A density of x / 255, or a Gaussian on binary values: no bits.
  assert _dataset("none").bits_per_dim(nats, "discretized_gaussian") == (
      pytest.approx(0.25))
  assert _dataset("none").bits_per_dim(nats, "gaussian") is None
  assert _dataset("dynamic").bits_per_dim(nats, "gaussian") is None
  assert "no bits/dim" in _dataset("none").units("gaussian")
  assert "+ 8" in _dataset("dequantize").units("gaussian")


def test_a_bernoulli_vae_on_dequantized_pixels_is_refused():
  data = _dataset("dequantize")
  with pytest.raises(UserError, match="binary data"):
    input_pipeline.check_likelihood(data, "bernoulli", is_vae=True)
  input_pipeline.check_likelihood(data, "gaussian", is_vae=True)
