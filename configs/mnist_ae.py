r"""Autoencoder on MNIST grayscale pixels (no binarization).

A deterministic MLP autoencoder 784-500-32 (gelu, linear code) trained on the
Bernoulli cross-entropy of the grayscale pixels in [0, 1]; the test metrics
are the reconstruction loss (nats), MSE and PSNR (dB).

  python -m vae_jax.main --config=configs/mnist_ae.py --workdir=workdirs/mnist_ae

The denoising and sparse variants are `mnist_dae.py` and
`mnist_sparse_ae.py`; `model.name=conv_ae` swaps in the convolutional
encoder and decoder. Smoke test:
`--config=configs/mnist_ae.py:runlocal`.
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base("ae")
  config.model.hidden = (500,)
  config.model.latent_dim = 32
  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.training.num_epochs = 20.0
  config.evals.elbo.every_steps = 2000
  config.evals.images.every_steps = 2000
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
