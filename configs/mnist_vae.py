r"""MLP VAE on dynamically binarized MNIST: the default vae_jax run, in minutes.

784-500-500-50 with gelu units (the decoder mirrors the encoder), Adam 1e-3
with a cosine decay for 36 epochs, then the importance-sampled test NLL
with k = 100 (results.json, `nll`) and the run report (report.html): a few
minutes on a 2-core CPU (see the README for the measured numbers and
times). The same model trained for 800 epochs and scored with k = 5000 is
`configs/mnist_vae_best.py`.

Train (resumes if the workdir holds a checkpoint):

  python -m vae_jax.main --config=configs/mnist_vae.py --workdir=workdirs/mnist_vae

A smoke-test size run: `--config=configs/mnist_vae.py:runlocal`.
Override any field: `--config.model.latent_dim=20 --config.training.num_epochs=100`.
"""

from vae_jax import config_lib

EPOCH = 468  # Steps per epoch: 60,000 images in batches of 128.


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  # Every field and its default: vae_jax/config_lib.py. The model is the
  # default's (784-500-500-50, gelu, Adam 1e-3 cosine); a short schedule.
  config.training.num_epochs = 36.0
  config.training.checkpoint_every_steps = 9 * EPOCH
  config.evals.elbo.every_steps = 9 * EPOCH
  config.evals.images.every_steps = 9 * EPOCH
  config.evals.latent_maps.every_steps = 9 * EPOCH
  config.evals.nll.num_samples = 100
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
