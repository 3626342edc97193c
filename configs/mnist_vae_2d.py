r"""A VAE with a 2-D latent on MNIST: watch the digits' clusters form.

784-500-2 (gelu), dynamically binarized MNIST, 50 epochs. Every 5 epochs
the `latent_maps` evaluator draws the test set's posterior means coloured
by digit (no label is used in training), and the report's "across
training" figure puts epoch 5 beside epoch 50; at the end, the decoded
manifold over a grid of Gaussian quantiles (Kingma and Welling 2014,
Fig. 4), traversals and interpolations.

  python -m vae_jax.main --config=configs/mnist_vae_2d.py --workdir=workdirs/mnist_vae_2d

A smoke-test size run: `--config=configs/mnist_vae_2d.py:runlocal`.
"""

from vae_jax import config_lib

EPOCH = 468  # Steps per epoch: 60,000 images in batches of 128.


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  config.model.hidden = (500,)
  config.model.latent_dim = 2
  config.training.num_epochs = 50.0
  config.training.checkpoint_every_steps = 10 * EPOCH
  config.evals.elbo.every_steps = 5 * EPOCH
  config.evals.images.every_steps = 25 * EPOCH
  config.evals.latent_maps.every_steps = 5 * EPOCH  # Epochs 5, 10, ..., 50.
  config.evals.latent_maps.num_points = 10000  # The whole test set.
  config.evals.latent_maps.grid_size = 20
  config.evals.nll.num_samples = 100
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
