r"""Rate-distortion sweep: latent size x beta on dynamically binarized MNIST.

36 points (6 latent sizes x 6 betas) of an MLP VAE 784-500-z (one hidden
layer, a shorter schedule than the default config's). Points with the
same latent size train together in one vmapped program (6 groups of 6).

  python -m vae_jax.sweep --config=configs/sweep_beta_latent.py --workdir=workdirs/sweep

Short schedule (the README's numbers): add --config.training.num_epochs=2.
One point alone (array jobs): --index=i; list them: --list.
"""

from vae_jax import config_lib

LATENT_DIMS = (2, 4, 8, 16, 32, 64)
BETAS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SEEDS = (0,)


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  # The MLP VAE 784-500-z of the sweep results in the README.
  config.model.hidden = (500,)
  config.optimizer.learning_rate = 5e-3
  config.optimizer.warmup_steps = 100
  config.optimizer.end_learning_rate_fraction = 0.05
  config.training.num_epochs = 10.0
  config.training.log_every_steps = 200
  config.training.checkpoint_every_steps = 1000
  config.evals.elbo.every_steps = 0  # Evaluate at the end only.
  config.evals.images.every_steps = 0
  config.evals.images.num_images = 32
  config.evals.nll.num_samples = 100
  config.sweep.max_group_size = 8  # Models per compiled program.
  if arg.runlocal:
    config_lib.runlocal(config)
  return config


def sweep(add):
  for latent_dim in LATENT_DIMS:
    for beta in BETAS:
      for seed in SEEDS:
        add(**{"model.latent_dim": latent_dim, "objective.beta": beta,
               "seed": seed})
