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

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base("ae")
  config.objective.corruption = "gaussian"
  config.objective.noise_level = 0.5
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
