"""Lossless bits-back coding (BB-ANS) of the test set, round trip checked.

For every model of the group, the first `evals.compress.num_examples` test
images (0: all; the fixed binarized test set) are compressed with
`vae_jax.bbans.Codec` and decompressed again; a round trip that is not exact
is a bug and raises (Bernoulli VAEs of binary images, and VAEs of uint8
images with a discretized Gaussian decoder). Metrics: `net_bits_per_dim` (the compressed words less
the initial ones, the rate that BB-ANS reports), `file_bits_per_dim` (the
whole file: header, initial words, checksum), `initial_bits`, and the
encoding and decoding speed in images per second. Compare them with the
`elbo` evaluator's `bits_per_dim` (-ELBO) and the `nll` evaluator's.
"""

import ml_collections
import numpy as np

from vae_jax import bbans
from vae_jax import steps
from vae_jax.errors import UserError
from vae_jax.evaluators import common


def settings_of(entry: ml_collections.ConfigDict) -> bbans.Settings:
  """The coder's `bbans.Settings` from an `evals.compress` entry."""
  return bbans.Settings(latent_bits=entry.latent_bits,
                        posterior_precision=entry.posterior_precision,
                        block_size=entry.block_size)


class Evaluator:
  """BB-ANS rates and speeds on the test set, for every model."""

  def __init__(self, entry: ml_collections.ConfigDict,
               ctx: common.Context):
    self.every_steps = entry.every_steps
    self.ctx = ctx
    self.settings = settings_of(entry)
    n = entry.num_examples or len(ctx.data.test_x)
    self.images = ctx.data.test_x[:n]

  @staticmethod
  def applies(ctx: common.Context) -> bool:
    """VAEs of binary images with a Bernoulli decoder, or of uint8 images
    with a discretized Gaussian one (the models it can code)."""
    if not ctx.is_vae:
      return False
    likelihood = ctx.likelihood
    if likelihood == "discretized_gaussian":
      return ctx.data.test_x.dtype == np.uint8
    return (likelihood == "bernoulli"
            and (ctx.data.binarization != "none" or ctx.data.is_binary))

  @staticmethod
  def validate(entry: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict) -> None:
    del config
    settings_of(entry).validate()
    if entry.num_examples < 0:
      raise UserError(f"evals.compress.num_examples must be >= 0 (0: all), "
                      f"got {entry.num_examples}.")

  def compile(self, state: steps.TrainState) -> None:
    del state  # Each model's codec jits its networks on first use.

  def run(self, state: steps.TrainState) -> list[common.Output]:
    outputs = []
    for i in range(self.ctx.num_models):
      params = self.ctx.select(state.params, i)
      codec = bbans.Codec(self.ctx.model, params, self.ctx.data.event_shape,
                          self.settings)
      data, enc = codec.compress(self.images, "the test set")
      decoded, dec = codec.decompress(data, "the test set's code")
      if not np.array_equal(decoded, self.images):
        raise AssertionError("BB-ANS did not round-trip the test set.")
      metrics = {
          "net_bits_per_dim": enc.net_bits_per_dim,
          "file_bits_per_dim": enc.file_bits_per_dim,
          "initial_bits": float(enc.initial_bits),
          "file_bytes": float(enc.file_bytes),
          "encode_images_per_s": enc.images_per_second,
          "decode_images_per_s": dec.images_per_second,
      }
      s = self.settings
      about = self.ctx.about(
          estimator="BB-ANS (Townsend et al. 2019) with constriction's "
                    "AnsCoder, round trip checked exact",
          units="net_bits_per_dim: compressed bits less the initial bits, "
                "per pixel; file_bits_per_dim: the whole file per pixel; "
                "initial_bits: clean bits the chain starts from",
          num_coded=len(self.images),
          latent_bits=s.latent_bits,
          posterior_precision=s.posterior_precision,
          block_size=s.block_size)
      outputs.append(common.Output(metrics=metrics, about=about))
    return outputs
