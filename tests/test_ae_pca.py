"""The ae_pca evaluator, and a linear autoencoder that learns PCA.

A linear autoencoder (no hidden layer, linear code, Gaussian decoder with a
fixed sigma: squared error) trained to convergence spans PCA's subspace
(Baldi and Hornik 1989): its test squared error equals PCA's at the same
code size, and the principal angles between the subspaces are ~0. On
scikit-learn's 8x8 digits, in seconds.
"""

import numpy as np
import pytest

from conftest import DEFAULT_CONFIG
from vae_jax import config_lib
from vae_jax import train
from vae_jax.evaluators import ae_pca

LINEAR_AE = {
    "data.source": "sklearn", "data.name": "digits",
    "data.binarization": "none",
    "model.name": "mlp_ae", "model.hidden": (), "model.latent_dim": 4,
    "model.likelihood": "gaussian", "model.gaussian_scale": 1.0,
    "objective.name": "ae",
    "optimizer.learning_rate": 2e-2, "optimizer.warmup_steps": 50,
    "training.batch_size": 128, "training.num_steps": 6000,
    "training.steps_per_call": 1000, "training.log_every_steps": 1000,
    "training.checkpoint_every_steps": 6000, "eval.batch_size": 120,
    "evals.elbo.every_steps": 0, "evals.images.enabled": False,
    "evals.latent_maps.enabled": False, "evals.nll.enabled": False,
    "evals.ae_pca.enabled": True,
}


def test_reconstruction_errors_by_hand():
  x = np.zeros((2, 2, 2, 1))
  x_hat = np.full((2, 2, 2, 1), 0.5)
  x_hat[1] = 0.0
  errors = ae_pca.reconstruction_errors(x, x_hat)
  np.testing.assert_allclose(errors["sse"], [4 * 0.25, 0.0])
  # mse 0.25: 10 log10(4) dB; an exact one is floored at 100 dB.
  np.testing.assert_allclose(errors["psnr"], [10 * np.log10(4.0), 100.0])


def test_pca_of_known_subspace():
  rng = np.random.default_rng(0)
  basis = np.linalg.qr(rng.normal(size=(10, 2)))[0].T  # [2, 10] orthonormal
  x = rng.normal(size=(500, 2)) * [3.0, 2.0] @ basis + 0.5
  pca = ae_pca.fit_pca(x, 2)
  np.testing.assert_allclose(ae_pca.pca_reconstruct(pca, x), x, atol=1e-9)
  assert max(ae_pca.principal_angles_deg(pca.components_, basis)) < 1e-5
  tilted = basis.copy()
  tilted[1] = np.cos(0.3) * basis[1] + np.sin(0.3) * np.linalg.qr(
      rng.normal(size=(10, 3)))[0][:, 2]
  angles = ae_pca.principal_angles_deg(basis, tilted)
  assert angles.max() > 5  # A tilted plane is seen.


def test_linear_autoencoder_reaches_pca(tmp_path):
  config = config_lib.get_config(DEFAULT_CONFIG, None, LINEAR_AE)
  final = train.train_and_evaluate(config, str(tmp_path))
  m = final["ae_pca"]
  assert m["pca_sse"] > 0
  # Within 2% of PCA's error at the same code size, and never better.
  assert m["sse"] == pytest.approx(m["pca_sse"], rel=0.02), m
  assert m["sse"] >= m["pca_sse"] * (1 - 1e-4)
  assert len(m["principal_angles_deg"]) == 4
  # Measured: 0.11 degrees at most, error 1.0001 x PCA's.
  assert max(m["principal_angles_deg"]) < 1.0, m["principal_angles_deg"]
  # --mode=eval reads no training example: it scores against the fit that
  # training saved in the workdir, and gives the same numbers.
  assert (tmp_path / ae_pca.FILE).exists()
  again = train.evaluate(config, str(tmp_path))["ae_pca"]
  assert set(again) == set(m)
  for name, value in m.items():
    assert again[name] == pytest.approx(value, rel=1e-9), name

