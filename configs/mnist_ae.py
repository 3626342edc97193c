r"""Autoencoder on MNIST grayscale pixels (no binarization).

A deterministic MLP autoencoder 784-500-32 (gelu, linear code) trained on the
Bernoulli cross-entropy of the grayscale pixels in [0, 1]; the test metrics
are the reconstruction loss (nats), MSE and PSNR (dB).

  python -m vae_jax.main --config=configs/mnist_ae.py --workdir=workdirs/mnist_ae

The denoising, sparse and convolutional variants build on this file
(`mnist_dae.py`, `mnist_sparse_ae.py`); `model.name=conv_ae` swaps in the
convolutional encoder and decoder. Smoke test:
`--config=configs/mnist_ae.py:runlocal`.
"""

import os

import ml_collections

from vae_jax import config_utils


def ae_objective(**overrides) -> ml_collections.ConfigDict:
  """The `ae` objective section: plain autoencoder unless overridden."""
  objective = ml_collections.ConfigDict({
      "name": "ae",
      "corruption": "none",  # none | gaussian | masking | salt_and_pepper
      "noise_level": 0.0,  # gaussian: sigma; masking, salt_and_pepper: rate
      "l1_weight": 0.0,  # Weight of sum_j |h_j| on the code.
      "sparsity_weight": 0.0,  # Weight of sum_j KL(rho || rho_hat_j).
      "sparsity_target": 0.05,  # rho, for sigmoid codes.
  })
  objective.update(overrides)
  return objective


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  base = config_utils.load_module(
      os.path.join(os.path.dirname(__file__), "mnist_vae.py"))
  config = base.get_config()
  config.data.binarization = "none"

  config.model.name = "mlp_ae"
  config.model.hidden = (500,)
  config.model.latent_dim = 32
  config.model.code_activation = "none"

  config.objective = ae_objective()

  config.optimizer.learning_rate = 1e-3
  config.optimizer.warmup_steps = 100
  config.training.num_epochs = 20.0
  config.eval.every_steps = 2000
  config.eval.num_importance_samples = 0  # A VAE-only metric.
  if arg == "runlocal":
    base.runlocal(config)
  return config
