"""Batches: the training set's per-step batches and the test set's padded ones.

`TrainBatches` gives this process's part of the global batch of any step, a
function of (seed, step) only (so a resumed run sees the same data);
`eval_batches` pads a test split into equal batches with a mask.
Pixels stay uint8 here; `input_pipeline.preprocess` turns them into model
inputs on the device.
"""

import numpy as np


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
