"""The latent_maps evaluator: its math, and its figures on small real runs.

Runs train on scikit-learn's 8x8x1 digits (offline, seconds): the session's
labelled MLP VAE with a 3-D latent (conftest `DIGITS_VAE`; PCA projection),
and a conv autoencoder on the same images saved without labels (no colours,
no legend).
"""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import digits_config as _config
from vae_jax import config_lib
from vae_jax import train
from vae_jax import trained
from vae_jax.errors import UserError
from vae_jax.evaluators import latent_maps


def _png(path):
  with Image.open(path) as im:
    im.load()
    return np.asarray(im)


@pytest.fixture(scope="module")
def vae_run(trained_digits, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("latent") / "vae")
  shutil.copytree(trained_digits, workdir)
  return workdir


def test_gaussian_quantile_grid():
  grid = latent_maps.gaussian_quantile_grid(5)
  # Phi^-1 of 0.05, 0.275, 0.5, ...: symmetric, equal prior mass apart.
  np.testing.assert_allclose(grid, [-1.644854, -0.597760, 0.0, 0.597760,
                                    1.644854], atol=1e-5)


def test_slerp_ends_and_norm():
  a, b = np.array([3.0, 0.0, 0.0]), np.array([0.0, 3.0, 0.0])
  path = latent_maps.slerp(a, b, np.linspace(0, 1, 7))
  np.testing.assert_allclose(path[0], a, atol=1e-12)
  np.testing.assert_allclose(path[-1], b, atol=1e-12)
  # On the great circle: equal norms stay equal (linear dips to 3/sqrt(2)).
  np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0, rtol=1e-12)
  np.testing.assert_allclose(path[3], [3 / np.sqrt(2)] * 2 + [0], rtol=1e-12)
  # Parallel vectors: linear.
  np.testing.assert_allclose(latent_maps.slerp(a, 2 * a, np.array([0.5])),
                             [1.5 * a])


def test_projection_pca_matches_scikit_learn_and_tsne_runs():
  from sklearn import decomposition
  rng = np.random.default_rng(0)
  points = rng.normal(size=(200, 6)) * np.array([5, 3, 1, 1, 1, 1])
  coords, how = latent_maps.project(points, "pca")
  expected = decomposition.PCA(2).fit_transform(points)
  np.testing.assert_allclose(np.abs(coords), np.abs(expected), rtol=1e-6,
                             atol=1e-8)
  assert how.startswith("PCA of the 6-D means")
  coords, how = latent_maps.project(points[:60], "tsne")
  assert coords.shape == (60, 2) and how == "t-SNE of the 6-D means"
  same, _ = latent_maps.project(points[:, :2], "pca")
  np.testing.assert_array_equal(same, points[:, :2])  # 2-D: as it is.


def test_validation_refuses_bad_entries():
  for field, value, match in (("projection", "umap", "projection must be"),
                              ("grid_size", 1, "grid_size must be >= 2"),
                              ("traversal_range", 0.0, "must be positive")):
    config = _config(**{f"evals.latent_maps.{field}": value})
    with pytest.raises(UserError, match=match):
      config_lib.validate(config)


def test_vae_figures_at_every_eval_and_history(vae_run):
  images = os.path.join(vae_run, "images")
  for step in (100, 200):
    for name in latent_maps.FIGURES:
      pixels = _png(os.path.join(images, f"{name}_{step:08d}.png"))
      assert pixels.ndim == 3 and pixels.shape[0] > 100
      assert pixels.std() > 0  # Not a blank picture.
  # Labelled: the points are coloured by digit (tab10).
  rgb = _png(os.path.join(images, "latent_scatter_00000200.png"))[..., :3]
  rgb = rgb.reshape(-1, 3).astype(float) / 255
  assert (np.abs(rgb - rgb.mean(1, keepdims=True)).max(1) > 0.1).mean() > 0.01
  with np.load(os.path.join(vae_run, latent_maps.HISTORY)) as f:
    assert list(f["steps"]) == [100, 200]
    # Every test example of the held-out split, projected to 2-D.
    assert f["coords_200"].shape == (359, 2)  # 20% of 1797.
    assert str(f["how"][-1]).startswith("PCA of the 3-D means")


def test_eval_mode_rebuilds_the_figures_and_keeps_history(vae_run):
  # --mode=eval's path: the same evaluator on the restored checkpoint, at
  # the same step: the history keeps step 100 and replaces step 200.
  with np.load(os.path.join(vae_run, latent_maps.HISTORY)) as f:
    before = f["coords_200"]
  train.evaluate(_config(), vae_run)
  with np.load(os.path.join(vae_run, latent_maps.HISTORY)) as f:
    assert list(f["steps"]) == [100, 200]
    # Same checkpoint, same test set: the same map.
    np.testing.assert_array_equal(f["coords_200"], before)
  # The Python API runs it too, returning the figures.
  out = trained.load(vae_run).evaluate()["latent_maps"]
  assert set(out.images) == set(latent_maps.FIGURES)


def test_unlabeled_conv_autoencoder(tmp_path):
  from sklearn import datasets
  x = np.round(datasets.load_digits().images * (255 / 16)).astype(np.uint8)
  path = tmp_path / "digits_unlabeled.npz"
  np.savez(path, x=x[..., None])  # No y: unlabeled.
  config = _config(**{
      "data.source": "npz", "data.name": "", "data.path": str(path),
      "data.binarization": "none", "model.name": "conv_ae",
      "model.conv_channels": (16,), "model.latent_dim": 2,
      "objective.name": "ae", "training.num_steps": 100,
      "evals.elbo.every_steps": 0, "evals.images.every_steps": 0,
      "evals.latent_maps.every_steps": 0, "evals.nll.enabled": False})
  workdir = str(tmp_path / "ae")
  train.train_and_evaluate(config, workdir)
  for name in latent_maps.FIGURES:
    if name == "latent_interpolations":
      continue
    assert _png(os.path.join(workdir, "images", f"{name}_00000100.png")
                ).std() > 0
  # An autoencoder has no prior: linear interpolation only (4 pairs).
  ae = trained.load(workdir)
  out = ae.evaluate()["latent_maps"]
  assert set(out.images) == set(latent_maps.FIGURES)
  # No legend: the scatter of unlabeled codes uses one colour (grey).
  scatter = out.images["latent_scatter"]
  rgb = scatter.reshape(-1, 3)
  coloured = np.abs(rgb - rgb.mean(1, keepdims=True)).max(1) > 0.1
  assert coloured.mean() < 0.002, coloured.mean()
