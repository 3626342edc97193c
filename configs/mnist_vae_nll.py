r"""VAE for the MNIST likelihood protocol of Burda et al. (2015).

Dynamically binarized MNIST, one stochastic layer: 784-200-200-50 with tanh
units (the decoder mirrors the encoder), trained on the ELBO and scored by
importance sampling with K = 5000 samples per test image on the fixed
binarized test set.

Train (resumes if the workdir holds a checkpoint); the importance-sampled
NLL with `evals.nll.num_samples` samples runs at the last step and lands in
results.json. To score a checkpoint again, e.g. with another K:

  python -m vae_jax.main --config=configs/mnist_vae_nll.py --workdir=workdirs/mnist_vae_nll
  python -m vae_jax.main --config=configs/mnist_vae_nll.py --workdir=workdirs/mnist_vae_nll \
      --mode=eval --config.evals.nll.num_samples=5000

(`evals.nll.chunk_size` sets how many samples are scored at once.) Burda
et al. train for 3280 epochs (3^i epochs at learning rate 1e-3 *
10^(-i/7), i = 0..7, batch 20) and report 86.76 nats for this model with
the ELBO; `training.num_epochs` here is a budget you choose, with Adam
and a cosine decay.

A smoke-test size run: `--config=configs/mnist_vae_nll.py:runlocal`.
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  config.model.hidden = (200, 200)
  config.model.latent_dim = 50
  config.model.activation = "tanh"
  config.training.num_epochs = 100.0
  config.evals.nll.num_samples = 5000  # K, per test image.
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
