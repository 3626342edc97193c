"""Image grids: test reconstructions and, for VAEs, samples from the prior.

A denoising autoencoder's grid shows clean, corrupted and reconstructed
rows; others alternate originals and reconstructions. Prior samples are the
decoder means E[x|z] of z ~ p(z) drawn from `Keys.images`.
"""

import ml_collections
import numpy as np

from vae_jax import compiler
from vae_jax import corruption
from vae_jax import input_pipeline
from vae_jax import sharding
from vae_jax import steps
from vae_jax import writers
from vae_jax.errors import UserError
from vae_jax.evaluators import common


class Evaluator:
  """`reconstructions` (and `samples`) grids for every model."""

  def __init__(self, entry: ml_collections.ConfigDict,
               ctx: common.Context):
    self.every_steps = entry.every_steps
    self.num_images = entry.num_images
    self.ctx = ctx
    self.keys = ctx.keys("images")
    model, o = ctx.model, ctx.config.objective
    n = min(self.num_images, len(ctx.data.test_x))
    self.x = sharding.global_array(
        input_pipeline.to_float(ctx.data.test_x[:n]), ctx.mesh.replicated)
    corrupt = (o.name == "ae" and o.corruption != "none")

    def grids(params, hparams, rng, x):
      rows = [x]
      if corrupt:
        rows.append(corruption.corrupt(o.corruption, x, rng,
                                       hparams["noise_level"]))
      rows.append(model.apply(params, rows[-1], method="reconstruct"))
      out = {"rows": rows}
      if ctx.is_vae:
        z = model.apply(params, rng, n, method="sample_prior")
        out["samples"] = model.apply(params, z, method="decode").mean()
      return out

    self._grids = compiler.jit(grids, tree_reductions=ctx.convolutional)

  applies = staticmethod(common.images_only)

  @staticmethod
  def validate(entry: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict) -> None:
    del config
    if entry.num_images < 1:
      raise UserError("evals.images.num_images must be >= 1, got "
                      f"{entry.num_images}.")

  def compile(self, state: steps.TrainState) -> None:
    self._grids = self._grids.lower(
        self.ctx.select(state.params, 0), self.ctx.select(state.hparams, 0),
        self.ctx.select(self.keys, 0), self.x).compile()

  def run(self, state: steps.TrainState) -> list[common.Output]:
    outputs = []
    for i in range(self.ctx.num_models):
      out = sharding.to_host(self._grids(
          self.ctx.select(state.params, i), self.ctx.select(state.hparams, i),
          self.ctx.select(self.keys, i), self.x))
      cols = min(len(self.x), 16)
      blocks = []  # Row blocks of `cols` images, one row per kind of image.
      for j in range(0, len(self.x), cols):
        for r in out["rows"]:
          part = np.asarray(r[j:j + cols])
          blank = np.ones((cols - len(part), *part.shape[1:]), part.dtype)
          blocks.append(np.concatenate([part, blank]))
      images = {"reconstructions": writers.image_grid(np.concatenate(blocks),
                                                      cols)}
      if "samples" in out:
        images["samples"] = writers.image_grid(out["samples"], cols)
      outputs.append(common.Output(metrics={}, images=images))
    return outputs
