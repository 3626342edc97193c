"""The one device mesh of a run, and moving arrays onto it and back.

All devices form a `("model", "data")` mesh of shape
`(training.model_axis_size, devices / model_axis_size)`. Batches are split
over "data" (`P(None, "data")` for `[steps or batches, B, ...]` arrays),
a group's stacked models over "model" when their number divides by it,
and everything else is replicated; XLA inserts the collectives.
"""

import dataclasses

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np


@dataclasses.dataclass(frozen=True)
class Mesh:
  """The mesh and the shardings every part of a run uses."""
  mesh: jax.sharding.Mesh
  replicated: jax.NamedSharding  # params of one model, scalars
  batches: jax.NamedSharding  # [S, B, ...]: B over the data axis
  models: jax.NamedSharding  # [K, ...] stacked models
  # [S, K, B, ...]: each model's own batches, K as `models`, B over data.
  model_batches: jax.NamedSharding


def create(model_axis_size: int, num_models: int = 1,
           devices: list[jax.Device] | None = None) -> Mesh:
  """The run's mesh; `num_models` decides whether models split over it.

  The config is validated first: `model_axis_size` divides the devices
  (`devices`, default all of them).
  """
  count = len(devices) if devices is not None else jax.device_count()
  mesh = jax.make_mesh(
      (model_axis_size, count // model_axis_size), ("model", "data"),
      axis_types=(jax.sharding.AxisType.Auto,) * 2,  # XLA propagates.
      devices=devices)
  replicated = jax.NamedSharding(mesh, jax.P())
  if num_models > 1 and num_models % model_axis_size == 0:
    models = jax.NamedSharding(mesh, jax.P("model"))
    model_batches = jax.NamedSharding(mesh, jax.P(None, "model", "data"))
    logging.info("Mesh %s: %d models split over the model axis.",
                 dict(mesh.shape), num_models)
  else:
    if model_axis_size > 1:
      logging.warning("%d model(s) do not divide over the model axis of %d "
                      "devices: each device holds all of them.", num_models,
                      model_axis_size)
    models = replicated
    model_batches = jax.NamedSharding(mesh, jax.P(None, None, "data"))
  return Mesh(mesh=mesh, replicated=replicated,
              batches=jax.NamedSharding(mesh, jax.P(None, "data")),
              models=models, model_batches=model_batches)


def global_array(x: np.ndarray, sharding: jax.NamedSharding) -> jax.Array:
  """A global array from data that every process holds in full."""
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def to_host(tree):
  """Numpy values of (possibly multi-process) global arrays."""
  return jax.tree.map(
      lambda x: np.asarray(x if x.is_fully_addressable
                           else multihost_utils.process_allgather(x,
                                                                  tiled=True)),
      tree)


def scalar(value, sharding: jax.NamedSharding) -> jax.Array:
  """A replicated scalar on the mesh: int32 counts, bool flags."""
  return jax.device_put(
      np.asarray(value, np.bool_ if isinstance(value, bool) else np.int32),
      sharding)
