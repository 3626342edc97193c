r"""IWAE (k = 50) for the MNIST likelihood protocol of Burda et al. (2015).

`configs/mnist_vae_nll.py` (dynamically binarized MNIST, 784-200-200-50,
tanh) trained on the importance-weighted bound with k = 50 samples per
example instead of the ELBO; Burda et al. report 84.78 nats for this model
(K = 5000) after 3280 epochs. Each step decodes 50 latents per image, so an
epoch costs about 50 times the VAE's decoder work.

Train (resumes if the workdir holds a checkpoint), then score:

  python -m vae_jax.main --config=configs/mnist_iwae.py --workdir=workdirs/mnist_iwae
  python -m vae_jax.evaluate --workdir=workdirs/mnist_iwae

A smoke-test size run: `--config=configs/mnist_iwae.py:runlocal`.
"""

import os

import ml_collections

from vae_jax import config_utils


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  directory = os.path.dirname(__file__)
  config = config_utils.load_module(
      os.path.join(directory, "mnist_vae_nll.py")).get_config()
  config.objective.name = "iwae"
  config.objective.num_samples = 50  # k of the training bound.
  # A budget for one CPU (about 37 s per epoch on 2 idle cores): raise it on an
  # accelerator (Burda et al. train 3280 epochs).
  config.training.num_epochs = 20.0
  if arg == "runlocal":
    config_utils.load_module(os.path.join(directory, "mnist_vae.py")).runlocal(
        config)
  return config
