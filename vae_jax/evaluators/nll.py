"""Importance-sampled test log-likelihood and latent diagnostics (VAEs).

-log p(x) by importance sampling with K = `evals.nll.num_samples` samples
from q(z|x) per test example (Burda et al. 2015; `vae_jax.importance`), on
the in-memory parameters and the run's mesh: the test batches are split
over the data axis, in one process or many. Sample j of example n comes
from `fold_in(fold_in(Keys.importance, n), j)`, so the estimate does not
depend on the batch or chunk size. Progress and an ETA are logged.
"""

import time

from absl import logging
import jax
import ml_collections
import numpy as np

from vae_jax import compiler
from vae_jax import importance
from vae_jax import models
from vae_jax import sharding
from vae_jax import steps
from vae_jax import writers
from vae_jax.errors import UserError
from vae_jax.evaluators import common


class Evaluator:
  """`nll` (nats and bits/dim), `nelbo_k`, `elbo_gap`, active units."""

  def __init__(self, entry: ml_collections.ConfigDict,
               ctx: common.Context):
    self.every_steps = entry.every_steps
    self.num_samples = entry.num_samples
    self.chunk_size = min(entry.chunk_size, entry.num_samples)
    self.ctx = ctx
    self.keys = ctx.keys("importance")
    batch_size = ctx.test_set.batch_size

    def batch(params, images, mask, rng, i):
      return importance.evaluate_batch(
          ctx.model, params, images[i], mask[i], rng, i * batch_size,
          num_samples=self.num_samples, chunk_size=self.chunk_size)

    self._batch = compiler.jit(batch, tree_reductions=ctx.convolutional)

  @staticmethod
  def validate(entry: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict) -> None:
    if not models.is_vae(config.model):
      raise UserError(f"evals.nll needs a VAE; model.name="
                      f"{config.model.name!r} is an autoencoder, which has "
                      "no likelihood to importance-sample: set "
                      "--config.evals.nll.enabled=False.")
    for name in ("num_samples", "chunk_size"):
      if entry[name] < 1:
        raise UserError(f"evals.nll.{name} must be >= 1, got {entry[name]}.")

  def compile(self, state: steps.TrainState) -> None:
    test = self.ctx.test_set
    params = self.ctx.select(state.params, 0)
    self._batch = self._batch.lower(
        params, test.images, test.mask, self.ctx.select(self.keys, 0),
        sharding.scalar(0, self.ctx.mesh.replicated)).compile()

  def run(self, state: steps.TrainState) -> list[common.Output]:
    return [self._run_one(state, i) for i in range(self.ctx.num_models)]

  def _run_one(self, state: steps.TrainState, model: int) -> common.Output:
    test, mesh = self.ctx.test_set, self.ctx.mesh
    params = self.ctx.select(state.params, model)
    rng = self.ctx.select(self.keys, model)
    start = last_log = time.time()
    outputs = []
    for i in range(test.num_batches):
      outputs.append(sharding.to_host(self._batch(
          params, test.images, test.mask, rng,
          sharding.scalar(i, mesh.replicated))))
      now = time.time()
      if now - last_log > 10.0 or i + 1 == test.num_batches:
        rate = (i + 1) / (now - start)
        logging.info("IS-NLL (k=%d) batch %d/%d (%.0f%%)  %.1f s  ETA %s",
                     self.num_samples, i + 1, test.num_batches,
                     100 * (i + 1) / test.num_batches, now - start,
                     writers.format_eta((test.num_batches - i - 1) / rate))
        last_log = now
    stacked = {k: np.stack([o[k] for o in outputs]) for k in outputs[0]}
    metrics = importance.summarize(stacked, test.host_mask)
    bits = self.ctx.bits_per_dim(metrics["nll"])
    if bits is not None:
      metrics["nll_bits_per_dim"] = bits
    return common.Output(metrics=metrics, about=self.ctx.about(
        estimator=f"importance sampling, k={self.num_samples} samples from "
                  "q(z|x) per example (Burda et al. 2015): a stochastic "
                  "lower bound on log p(x); nelbo_k is -ELBO from the same "
                  "samples (Monte Carlo KL)",
        units=self.ctx.units("nll") + " (nll_stderr: std over examples / "
              "sqrt(N))",
        num_samples=self.num_samples, chunk_size=self.chunk_size,
        active_unit_threshold=importance.ACTIVE_UNIT_THRESHOLD,
        device=f"{jax.device_count()} x {jax.devices()[0].device_kind}"))
