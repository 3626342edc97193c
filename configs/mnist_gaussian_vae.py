r"""VAE with a Gaussian decoder on grayscale MNIST, uniformly dequantized.

p(x|z) = N(mu(z), diag(sigma^2)) with a learned per-pixel sigma, floored at
`model.min_scale` = 0.01 (sigma = 0.01 + softplus(raw), starting at 0.1).
Without the floor, pixels the decoder fits exactly (MNIST's constant
borders) drive sigma to 0 and the likelihood to infinity. The 8-bit pixels
are dequantized, y = (x + u) / 256 with u ~ U[0, 1) fresh each step (a fixed
draw for the test set), so -ELBO in nats is of a density of y on [0, 1)^784,
and bits_per_dim = nats / (784 ln 2) + 8 bounds the bits of the 8-bit images
(Theis et al. 2016): comparable with other 8-bit results, not with binarized
MNIST. (With data.binarization="none", a density of x / 255, no bits/dim is
reported.)

Fixed variance: `--config.model.learn_scale=none --config.model.gaussian_scale=S`
gives -log p(x|z) = ||x - mu||^2 / (2 S^2) + 784 (log S + log(2 pi) / 2): the
squared error up to a scale and a constant, which are kept so the numbers
stay nats. `global` learns one sigma for all pixels.

  python -m vae_jax.main --config=configs/mnist_gaussian_vae.py --workdir=workdirs/mnist_gaussian_vae
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  config.data.binarization = "dequantize"
  config.model.likelihood = "gaussian"
  config.model.learn_scale = "per_pixel"
  config.model.gaussian_scale = 0.1
  config.model.min_scale = 0.01
  config.training.num_epochs = 20.0
  config.evals.nll.num_samples = 100
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
