r"""Denoising autoencoder: `mnist_ae.py` trained on noisy inputs.

Each training input gets fresh Gaussian noise (sigma = 0.5, clipped to [0, 1])
on the device, from the step's key; the loss reconstructs the clean image.
The test metrics add `psnr_input`, the PSNR of the noisy input itself, next
to `psnr`, that of the reconstruction of a noisy test image against the
clean one. Other corruptions: `--config.objective.corruption=masking` or
`salt_and_pepper` with `--config.objective.noise_level=RATE`.

  python -m vae_jax.main --config=configs/mnist_dae.py --workdir=workdirs/mnist_dae

`experiments/denoising.py` compares it with the plain autoencoder.
"""

import os

from vae_jax import config_utils


def get_config(arg: str | None = None):
  directory = os.path.dirname(__file__)
  ae = config_utils.load_module(os.path.join(directory, "mnist_ae.py"))
  config = ae.get_config()
  config.objective = ae.ae_objective(corruption="gaussian", noise_level=0.5)
  if arg == "runlocal":
    config_utils.load_module(os.path.join(directory, "mnist_vae.py")).runlocal(
        config)
  return config
