"""What every evaluator shares: its inputs, its outputs, the padded test set.

An evaluator is built once from its config entry (`config.evals.<name>`)
and a `Context` (the run's configs, model, objective, data and mesh), and
`run(state)` scores every model of a stacked train state, returning one
`Output` per model. The train loop, `--mode=eval` and the Python API
(`trained.TrainedModel.evaluate`) all call the same objects.
"""

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np

from vae_jax import batching
from vae_jax import compiler
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import objectives
from vae_jax import sharding
from vae_jax import steps


@dataclasses.dataclass
class Context:
  """The parts of a run that evaluators are built from."""
  configs: list[ml_collections.ConfigDict]  # one per model of the group
  model: models.VAE | models.Autoencoder
  objective: objectives.Objective
  data: input_pipeline.Dataset
  mesh: sharding.Mesh
  # Each model's run directory (where an evaluator may keep what it needs
  # across evaluations, e.g. `latent_maps.npz`); None from the Python API
  # without a workdir.
  workdirs: list[str] | None = None

  @property
  def config(self) -> ml_collections.ConfigDict:
    """The config the models share (they differ in hyperparameters only)."""
    return self.configs[0]

  @property
  def num_models(self) -> int:
    return len(self.configs)

  @property
  def is_vae(self) -> bool:
    return models.is_vae(self.config.model)

  @property
  def convolutional(self) -> bool:
    return models.is_convolutional(self.config.model)

  @functools.cached_property
  def test_set(self) -> "TestSet":
    return TestSet(self.data.test_x, self.config.eval.batch_size, self.mesh)

  @property
  def likelihood(self) -> str:
    """The decoder's likelihood ("bernoulli" or "gaussian"), resolved."""
    return models.resolve_likelihood(self.config.model,
                                     self.data.event_shape)[0]

  def bits_per_dim(self, nats: float) -> float | None:
    """`input_pipeline.Dataset.bits_per_dim` under this model's likelihood:
    None where nats are no code length of the data."""
    return self.data.bits_per_dim(nats, self.likelihood)

  def units(self, name: str) -> str:
    """How `name`'s nats and bits/dim read (`Dataset.units`)."""
    return self.data.units(self.likelihood, name)

  def keys(self, purpose: str) -> jax.Array:
    """`[K]` keys of one `steps.Keys` stream, one per model, on the mesh."""
    data = np.stack([jax.random.key_data(getattr(
        steps.Keys.from_seed(c.seed), purpose)) for c in self.configs])
    return jax.random.wrap_key_data(
        sharding.global_array(data, self.mesh.models))

  @functools.cached_property
  def _select(self):
    return compiler.jit(steps.index, tree_reductions=False,
                        out_shardings=self.mesh.replicated)

  def select(self, tree: Any, i: int) -> Any:
    """Model i of a stacked (possibly sharded) tree, replicated."""
    return self._select(tree, sharding.scalar(i, self.mesh.replicated))

  def about(self, **labels) -> dict[str, Any]:
    """How a number was obtained: split, examples, binarization, and more."""
    d = self.config.data
    return {**self.data.about(),
            "binarization": (f"fixed, seed {d.binarization_seed}"
                             if self.data.binarization != "none" else "none"),
            **labels}


def images_only(ctx: Context) -> bool:
  """An evaluator's `applies` when it draws pictures of the examples: images
  only, since a table's rows are not pictures."""
  return ctx.data.kind == "image"


@dataclasses.dataclass
class Output:
  """What an evaluator reports for one model."""
  metrics: dict[str, Any]  # floats (and lists: per-unit diagnostics)
  about: dict[str, Any] = dataclasses.field(default_factory=dict)  # labels
  images: dict[str, np.ndarray] = dataclasses.field(
      default_factory=dict)  # [H, W, C] grids in [0, 1]


class TestSet:
  """The evaluation split in padded batches, on the run's mesh.

  `images` `[NB, EB, *event]` (uint8 pixels, or float32 rows of a table)
  and `mask` `[NB, EB]` (1 for real examples) are split over the data
  axis; batch i holds examples [i EB, (i + 1) EB), and the last one is
  padded. EB is `batch_size` rounded up to a multiple of the data axis's
  devices, so any `eval.batch_size` runs on any number of devices.
  """

  def __init__(self, images: np.ndarray, batch_size: int,
               mesh: sharding.Mesh):
    self.num_examples = len(images)
    devices = mesh.mesh.shape["data"]
    batch_size = -(-batch_size // devices) * devices
    batches, mask = batching.eval_batches(images, batch_size)
    self.num_batches, self.batch_size = mask.shape
    self.images = sharding.global_array(batches, mesh.batches)
    self.mask = sharding.global_array(mask, mesh.batches)
    self.host_mask = mask


def masked_mean(sums: np.ndarray, num_examples: int) -> float:
  """The mean of per-example values from their masked per-batch sums.

  Args:
    sums: `[NB]` sums over each batch's real examples.
    num_examples: N, the real examples over all batches.

  Returns:
    sum / N, added up in float64.
  """
  return float(np.sum(np.asarray(sums, np.float64))) / num_examples



