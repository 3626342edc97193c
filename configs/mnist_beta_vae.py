r"""beta-VAE (beta = 4) with a KL warm-up, on dynamically binarized MNIST.

The MLP VAE of `mnist_vae.py` with 10 latents, trained on
-E_q[log p(x|z)] + beta KL(q(z|x) || p(z)) with beta = 4: the KL weight
ramps linearly from 0 to beta over the first 5000 steps. The reported
`nelbo` stays the unweighted bound. `objective.free_bits` (nats per latent
unit) adds a KL floor against posterior collapse.
`configs/sweep_beta_latent.py` sweeps beta (without warm-up) and the
latent size.

  python -m vae_jax.main --config=configs/mnist_beta_vae.py --workdir=workdirs/mnist_beta_vae
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  config.model.latent_dim = 10
  config.objective.beta = 4.0
  config.objective.kl_warmup_steps = 5000
  config.training.num_epochs = 50.0
  config.evals.nll.num_samples = 1000
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
