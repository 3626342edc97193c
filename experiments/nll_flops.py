r"""FLOPs of the importance-sampled NLL evaluation (`evals.nll`) of a config.

  python experiments/nll_flops.py --config=configs/mnist_vae.py \
      [--num_samples=5000] [--chunk_size=100] [--batch_size=500]

Counts what `vae_jax.evaluators.nll` runs: `importance.evaluate_batch` on
every padded test batch, with K importance samples per example scored in
chunks. The count is XLA's cost analysis ('flops' of
`compile().cost_analysis()`) of one batch compiled for one device, plus
(chunks - 1) times that of one chunk update compiled on its own (XLA counts
the body of a loop once, whatever its trip count), times the number of
batches, padding included. Without flags, K, the chunk size and the batch
size are the config's (`evals.nll.num_samples`, `evals.nll.chunk_size`,
`eval.batch_size`); no parameter is trained or restored (only shapes
matter) and the test split is read for its size and image shape.
"""

import functools
import os
import sys
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
# pylint: disable=g-import-not-at-top
from vae_jax import importance
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax.errors import UserError
# pylint: enable=g-import-not-at-top


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per module.
    cost = cost[0]
  return float(cost["flops"])


def batch_flops(model: models.VAE, params: Any, batch_size: int,
                event_shape: tuple[int, ...], *, num_samples: int,
                chunk_size: int) -> float:
  """XLA's FLOP count of one `importance.evaluate_batch` call on one device.

  XLA's cost analysis counts the body of a while loop once, whatever its trip
  count, so the count of the compiled batch function is completed with
  (chunks - 1) times that of one chunk update compiled on its own. Both are
  compiled from abstract shapes without sharding, so the count is that of
  the whole batch.

  Args:
    model: a VAE.
    params: its parameters, or a `jax.ShapeDtypeStruct` tree of them.
    batch_size: examples per batch (`eval.batch_size`).
    event_shape: the shape of one example.
    num_samples: K.
    chunk_size: samples scored at once; `min(chunk_size, K)` is used, as by
      the evaluator.
  """
  importance._check_sizes(num_samples, chunk_size)  # pylint: disable=protected-access
  images = jax.ShapeDtypeStruct((batch_size, *event_shape), jnp.uint8)
  x = jax.ShapeDtypeStruct((batch_size, *event_shape), jnp.float32)
  rng = jax.eval_shape(lambda: jax.random.key(0))
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                        params)
  chunk = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk)
  compiled_batch = jax.jit(functools.partial(
      importance.evaluate_batch, model, num_samples=num_samples,
      chunk_size=chunk)).lower(
          params, images, jax.ShapeDtypeStruct((batch_size,), jnp.float32),
          rng, jax.ShapeDtypeStruct((), jnp.int32)).compile()
  # pylint: disable=protected-access
  posterior = jax.eval_shape(
      lambda p, v: model.apply(p, v, method="encode"), params, x)
  keys = jax.eval_shape(
      lambda r: importance._example_keys(r, jnp.arange(batch_size)), rng)
  carry = jax.eval_shape(
      lambda: importance._init_carry(batch_size, posterior.mean.dtype))
  update = jax.jit(functools.partial(
      importance._chunk_update, model, num_samples=num_samples,
      chunk_size=chunk))
  # pylint: enable=protected-access
  compiled_chunk = update.lower(params, x, posterior, keys, carry,
                                jax.ShapeDtypeStruct((), jnp.int32)).compile()
  return _flops(compiled_batch) + (num_chunks - 1) * _flops(compiled_chunk)


def evaluation_flops(config, num_samples: int, chunk_size: int,
                     batch_size: int) -> dict[str, Any]:
  """The FLOPs of scoring the config's test split, and how they add up."""
  if not models.is_vae(config.model):
    raise UserError(f"model.name={config.model.name!r} is an autoencoder: "
                    "it has no likelihood to importance-sample.")
  importance._check_sizes(num_samples, chunk_size)  # pylint: disable=protected-access
  if batch_size < 1:
    raise UserError(f"The batch size must be >= 1, got {batch_size}.")
  models.validate_config(config.model)
  data = input_pipeline.load(config.data, train=False)
  event_shape = tuple(data.event_shape)
  model = models.create_model(config.model, event_shape)
  params = jax.eval_shape(lambda: models.init_params(
      model, jax.random.key(0), event_shape))
  num_examples = len(data.test_x)
  num_batches = -(-num_examples // batch_size)
  per_batch = batch_flops(model, params, batch_size, event_shape,
                          num_samples=num_samples, chunk_size=chunk_size)
  return {"num_examples": num_examples, "num_batches": num_batches,
          "batch_size": batch_size, "num_samples": num_samples,
          "chunk_size": min(chunk_size, num_samples),
          "flops_per_batch": per_batch, "flops": num_batches * per_batch}


def _define_flags() -> None:
  # Defined only when this file runs as a program: tests import it next to
  # modules that define --config (vae_jax.sweep, vae_jax.main).
  config_flags.DEFINE_config_file(
      "config", os.path.join(REPO, "configs", "mnist_vae.py"),
      "Config file, e.g. configs/mnist_vae.py.", lock_config=True)
  flags.DEFINE_integer(
      "num_samples", None, "K; default the config's evals.nll.num_samples.")
  flags.DEFINE_integer(
      "chunk_size", None, "Samples scored at once; default the config's "
      "evals.nll.chunk_size.")
  flags.DEFINE_integer(
      "batch_size", None, "Test examples per batch; default the config's "
      "eval.batch_size.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  f = flags.FLAGS
  config = f.config
  nll = config.evals.nll
  k = f.num_samples if f.num_samples is not None else nll.num_samples
  chunk = f.chunk_size if f.chunk_size is not None else nll.chunk_size
  batch = f.batch_size if f.batch_size is not None else config.eval.batch_size
  try:
    r = evaluation_flops(config, k, chunk, batch)
  except UserError as e:
    print(f"nll_flops: {e}", file=sys.stderr)
    sys.exit(2)
  m = config.model
  print(f"IS-NLL of {config.data.name} {config.data.eval_split} "
        f"({r['num_examples']} examples), {m.name} "
        f"hidden={tuple(m.hidden)} latent_dim={m.latent_dim}: "
        f"K={r['num_samples']} in chunks of {r['chunk_size']}, "
        f"{r['num_batches']} batches of {r['batch_size']}")
  print(f"FLOPs per batch: {r['flops_per_batch']:.4g}")
  print(f"FLOPs: {r['flops']:.4g}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
