r"""IWAE (k = 50) for the MNIST likelihood protocol of Burda et al. (2015).

`configs/mnist_vae_nll.py` (dynamically binarized MNIST, 784-200-200-50,
tanh) trained on the importance-weighted bound with k = 50 samples per
example instead of the ELBO; Burda et al. report 84.78 nats for this model
(K = 5000) after 3280 epochs. Each step decodes 50 latents per image, so an
epoch costs about 50 times the VAE's decoder work.

Train (resumes if the workdir holds a checkpoint); the NLL with K = 5000
runs at the last step (results.json, `nll`):

  python -m vae_jax.main --config=configs/mnist_iwae.py --workdir=workdirs/mnist_iwae

A smoke-test size run: `--config=configs/mnist_iwae.py:runlocal`.
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  # The model of mnist_vae_nll.py.
  config.model.hidden = (200, 200)
  config.model.latent_dim = 50
  config.model.activation = "tanh"
  config.objective.name = "iwae"
  config.objective.num_samples = 50  # k of the training bound.
  # A budget for one CPU (about 37 s per epoch on 2 idle cores): raise it on an
  # accelerator (Burda et al. train 3280 epochs).
  config.training.num_epochs = 20.0
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
