r"""VAE on a table: scikit-learn's breast_cancer (569 rows, 30 features).

Rows are vectors [D]; each feature is standardized with the training split's
mean and std (saved in the workdir as standardization.json, applied again by
--mode=eval and the Python API). The likelihood is `auto`: for a table, a
Gaussian with a learned per-feature std, so -ELBO and the IS-NLL are nats of
a density over the standardized features (not comparable with pixels'
nats). A seeded 20% of the rows is held out as the test split
(`data.test_fraction`, `data.split_seed`). Labels (benign, malignant) are
kept for evaluation only.

  python -m vae_jax.main --config=configs/tabular_vae.py --workdir=workdirs/tabular_vae

Your own table: `--config.data.source=csv --config.data.path=my.csv
--config.data.label_column=label` (or no label column).
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base()
  config.data.source = "sklearn"
  config.data.name = "breast_cancer"
  config.data.binarization = "none"  # Binarization is for images.
  config.model.hidden = (64, 64)
  config.model.latent_dim = 4
  config.training.batch_size = 64
  config.training.num_epochs = 300.0
  config.training.log_every_steps = 200
  config.training.checkpoint_every_steps = 1000
  config.optimizer.warmup_steps = 100
  config.evals.elbo.every_steps = 500
  config.evals.nll.num_samples = 1000
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
