r"""One-class MNIST (Ruff et al. 2018): ten VAEs, one per digit, in one program.

Each point trains on one digit's training images (`data.train_classes`) and
scores all 10,000 test images with the `anomaly` evaluator: the other nine
digits are the anomalies. The ten points differ only in their training
classes, so the sweep trains them as one vmapped group, each model on its own
batches, with the same number of steps (`training.num_steps`; an epoch is
measured on each model's own subset). A seeded 10% of the training split is
held out (`data.validation_fraction`) for the anomaly threshold.

  python -m vae_jax.sweep --config=configs/mnist_one_class.py --workdir=workdirs/one_class

Autoencoders instead (reconstruction scores, grayscale pixels):
`--config=configs/mnist_one_class.py:ae`, trained with a squared-error loss
(a Gaussian decoder of fixed std 1): the best detector here, mean AUROC 97.10
over the ten digits against 96.24 with the cross-entropy loss of a Bernoulli
decoder (README, "Anomaly detection"). The protocol with PCA baselines and
the published numbers: `experiments/one_class_mnist.py` (README, "Anomaly
detection").
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False, ae=False)
  config = config_lib.base("ae" if arg.ae else "vae")
  if arg.ae:  # Squared error: what the mse score measures.
    config.model.likelihood = "gaussian"
    config.model.gaussian_scale = 1.0
  config.data.train_classes = "0"  # Each point sets its digit.
  config.data.validation_fraction = 0.1
  config.model.hidden = (500, 500)
  config.model.latent_dim = 20
  config.optimizer.warmup_steps = 200
  config.training.num_steps = 4000  # ~95 epochs of one digit's ~5.4k images.
  config.training.log_every_steps = 500
  config.training.checkpoint_every_steps = 2000
  config.evals.elbo.every_steps = 0
  config.evals.images.every_steps = 0
  config.evals.images.num_images = 32
  config.evals.nll.enabled = False  # The anomaly evaluator scores -log p(x).
  config.evals.anomaly.enabled = True
  config.evals.anomaly.every_steps = 0
  config.evals.anomaly.num_samples = 100
  config.sweep.max_group_size = 10  # All ten digits in one program.
  if arg.runlocal:
    config_lib.runlocal(config)
  return config


def sweep(add):
  for digit in range(10):
    add(**{"data.train_classes": str(digit)})
