r"""Convolutional VAE on dynamically binarized MNIST.

Encoder: 4x4 stride-2 convolutions with 32 and 64 channels (28 -> 14 -> 7),
a dense layer of 256, Gaussian heads for 50 latents; the decoder mirrors it
with learned x2 upsamplings (sub-pixel convolutions, `models.Upsample`);
shapes follow the data, so 32x32x3 images work too. Same data, optimizer
and schedule as `mnist_vae.py`, for 10 epochs: the README compares it with
`mnist_vae.py --config.training.num_epochs=10`.

  python -m vae_jax.main --config=configs/mnist_conv_vae.py --workdir=workdirs/mnist_conv_vae
"""

import os

from vae_jax import config_utils


def get_config(arg: str | None = None):
  base = config_utils.load_module(
      os.path.join(os.path.dirname(__file__), "mnist_vae.py"))
  config = base.get_config()
  config.model.name = "conv_vae"
  config.model.conv_channels = (32, 64)
  config.model.hidden = (256,)
  config.model.latent_dim = 50
  config.training.num_epochs = 10.0
  config.eval.every_steps = 1000
  # The conv decoder is ~5x the MLP's work per sample: score the NLL with
  # `python -m vae_jax.evaluate --workdir=...` when you need it.
  config.eval.num_importance_samples = 0
  # The decoder's image patches for 100 samples x 500 images would take
  # ~17 GB; 10 at a time keep the evaluation under 2 GB.
  config.eval.importance_chunk_size = 10
  if arg == "runlocal":
    base.runlocal(config)
  return config
