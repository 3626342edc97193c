r"""MLP VAE on dynamically binarized MNIST, 800 epochs: the README's 84.00 nats.

784-500-500-50 with gelu units (the decoder mirrors the encoder), Adam with
a cosine decay for 800 epochs: about 40 minutes on a 2-core CPU, then the
importance-sampled test NLL with k = 5000 (results.json, `nll`; see the README for
the measured numbers and times).

Train (resumes if the workdir holds a checkpoint):

  python -m vae_jax.main --config=configs/mnist_vae_best.py --workdir=workdirs/mnist_vae_best

A smoke-test size run: `--config=configs/mnist_vae_best.py:runlocal`.
Override any field: `--config.model.latent_dim=50 --config.training.num_epochs=100`.
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  # Every field and its default: vae_jax/config_lib.py. This run is
  # config_lib.base(): 784-500-500-50, gelu, Adam 1e-3 cosine, 800 epochs,
  # k = 5000 (configs/mnist_vae.py is the same model for 36 epochs).
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
