r"""VAE for the MNIST likelihood protocol of Burda et al. (2015).

Dynamically binarized MNIST, one stochastic layer: 784-200-200-50 with tanh
units (the decoder mirrors the encoder), trained on the ELBO and scored by
importance sampling with K = 5000 samples per test image on the fixed
binarized test set.

Train (resumes if the workdir holds a checkpoint), then score:

  python -m vae_jax.main --config=configs/mnist_vae_nll.py --workdir=workdirs/mnist_vae_nll
  python -m vae_jax.evaluate --workdir=workdirs/mnist_vae_nll

`python -m vae_jax.evaluate` reads `eval.num_importance_samples` and
`eval.importance_chunk_size` from the workdir's config.json (its
--num_importance_samples and --chunk_size flags override them) and writes
eval.json. Burda et al. train for 3280 epochs (3^i epochs at learning rate
1e-3 * 10^(-i/7), i = 0..7, batch 20) and report 86.76 nats for this model
with the ELBO; `training.num_epochs` here is a budget you choose, with Adam
and a cosine decay.

A smoke-test size run: `--config=configs/mnist_vae_nll.py:runlocal`.
"""

import os

import ml_collections

from vae_jax import config_utils


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  base = config_utils.load_module(
      os.path.join(os.path.dirname(__file__), "mnist_vae.py"))
  config = base.get_config()
  config.data.binarization = "dynamic"

  config.model.hidden = (200, 200)
  config.model.latent_dim = 50
  config.model.activation = "tanh"
  config.model.likelihood = "bernoulli"

  config.objective.name = "elbo"
  config.objective.beta = 1.0
  config.objective.num_samples = 1  # Latent samples per training example.

  config.optimizer.learning_rate = 1e-3
  config.training.num_epochs = 100.0

  config.eval.num_importance_samples = 5000  # K, per test image.
  # Samples scored at once: memory ~ chunk * eval.batch_size decoder outputs.
  config.eval.importance_chunk_size = 100

  if arg == "runlocal":
    base.runlocal(config)
  return config
