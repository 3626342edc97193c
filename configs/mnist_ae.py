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
  # The default autoencoder: every field in vae_jax/config_lib.py.
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
