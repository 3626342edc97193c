r"""Convolutional VAE on dynamically binarized MNIST.

Encoder: 4x4 stride-2 convolutions with 32 and 64 channels (28 -> 14 -> 7),
a dense layer of 256, Gaussian heads for 50 latents; the decoder mirrors it
with learned x2 upsamplings (sub-pixel convolutions, `models.Upsample`);
shapes follow the data, so 32x32x3 images work too. Same data, optimizer
and schedule as `mnist_vae.py`, for 10 epochs: the README compares it with
`mnist_vae.py --config.training.num_epochs=10`.

  python -m vae_jax.main --config=configs/mnist_conv_vae.py --workdir=workdirs/mnist_conv_vae
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  config.model.name = "conv_vae"
  config.model.conv_channels = (32, 64)
  config.model.hidden = (256,)
  config.model.latent_dim = 50
  config.training.num_epochs = 10.0
  config.evals.elbo.every_steps = 1000
  config.evals.images.every_steps = 1000
  # The conv decoder is ~5x the MLP's work per sample: score the NLL with
  # `--mode=eval --config.evals.nll.enabled=True` when you need it.
  config.evals.nll.enabled = False
  # The decoder's image patches for 100 samples x 500 images would take
  # ~17 GB; 10 at a time keep the evaluation under 2 GB.
  config.evals.nll.chunk_size = 10
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
