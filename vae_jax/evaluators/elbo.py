"""The objective's test metrics: -ELBO (VAEs) or reconstruction (AEs).

Every model of a group is scored in one vmapped program over the padded
test set. A VAE's latents for batch i come from `fold_in(Keys.eval, i)`:
one sample per example, so `nelbo` is the single-sample Monte Carlo
estimate of -ELBO = -E_q[log p(x|z)] + KL(q(z|x) || p(z)) (closed-form KL),
in nats per example, the same number for the same checkpoint wherever it is
computed.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import compiler
from vae_jax import input_pipeline
from vae_jax import sharding
from vae_jax import steps
from vae_jax.evaluators import common


def _batch_sums(params, hparams, images, mask, rng, *, objective):
  """`{metric: [NB]}` masked per-batch sums of per-example metrics."""

  def body(_, inputs):
    i, batch, batch_mask = inputs
    x = input_pipeline.preprocess(batch, None, "none")
    metrics = steps.eval_step(params, hparams, x, jax.random.fold_in(rng, i),
                              objective=objective)
    return None, {k: jnp.sum(jnp.where(batch_mask > 0, v, 0.0))
                  for k, v in metrics.items()}

  _, sums = jax.lax.scan(body, None,
                         (jnp.arange(images.shape[0]), images, mask))
  return sums


class Evaluator:
  """Means over the test set of the objective's per-example metrics.

  Batch-level terms (free bits, the sparsity penalty, and `loss` with them)
  see the padding examples of the last batch; choose an `eval.batch_size`
  that divides the test set (500 for MNIST) for them to be exact. -ELBO,
  reconstruction and PSNR are per example and always exact.
  """

  def __init__(self, entry: ml_collections.ConfigDict,
               ctx: common.Context):
    self.every_steps = entry.every_steps
    self.ctx = ctx
    self.keys = ctx.keys("eval")
    self._sums = compiler.jit(
        steps.map_models(
            functools.partial(_batch_sums, objective=ctx.objective),
            ctx.num_models, in_axes=(0, 0, None, None, 0)),
        tree_reductions=ctx.convolutional)

  @staticmethod
  def validate(entry: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict) -> None:
    del entry, config  # Nothing beyond every_steps.

  def compile(self, state: steps.TrainState) -> None:
    test = self.ctx.test_set
    self._sums = self._sums.lower(state.params, state.hparams, test.images,
                                  test.mask, self.keys).compile()

  def run(self, state: steps.TrainState) -> list[common.Output]:
    test = self.ctx.test_set
    sums = sharding.to_host(self._sums(state.params, state.hparams,
                                       test.images, test.mask, self.keys))
    outputs = []
    for i in range(self.ctx.num_models):
      metrics = {k: common.masked_mean(v[i], test.num_examples)
                 for k, v in sums.items()}
      if "nelbo" in metrics:
        bits = self.ctx.bits_per_dim(metrics["nelbo"])
        if bits is not None:
          metrics["bits_per_dim"] = bits
        about = self.ctx.about(
            estimator="single-sample Monte Carlo -ELBO (closed-form KL), "
                      "mean over the test set",
            units=self.ctx.units("nelbo"), num_latent_samples=1)
      else:
        about = self.ctx.about(
            estimator="mean over the test set of the objective's terms",
            units="recon: the reconstruction loss per example (the "
                  "decoder's -log p(x|code) used as a loss, e.g. "
                  "cross-entropy: not a likelihood of the data); mse: "
                  "squared error per example, pixels in [0, 1]; psnr: dB")
      outputs.append(common.Output(metrics=metrics, about=about))
    return outputs
