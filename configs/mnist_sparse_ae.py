r"""Sparse autoencoder: 196 sigmoid code units with the KL sparsity penalty.

784-196-784 (one sigmoid code layer, linear decoder to Bernoulli logits) on
grayscale MNIST. The loss adds sparsity_weight * sum_j KL(rho || rho_hat_j),
rho_hat_j the batch-mean activation of unit j (Ng, 2011), with rho = 0.05
and a weight of 30: the reconstruction term is a sum over 784 pixels in
nats, so the weight is larger than the 3 of formulations that average the
squared error (weight 3 left the mean activation at 0.083). An L1 penalty
on the code is available as `objective.l1_weight`. The test metrics report
`code_mean` (mean activation, to compare with rho) and `code_near_zero`
(fraction of activations under 0.01).

  python -m vae_jax.main --config=configs/mnist_sparse_ae.py --workdir=workdirs/mnist_sparse_ae
"""

from vae_jax import config_lib


def get_config(arg: str | None = None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base("ae")
  config.model.hidden = ()
  config.model.latent_dim = 196
  config.model.code_activation = "sigmoid"
  config.objective.sparsity_weight = 30.0
  config.objective.sparsity_target = 0.05
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
