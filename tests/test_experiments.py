"""Tests of the scripts in experiments/ (imported as modules, not run)."""

import importlib
import os
import sys

import jax
import pytest

from conftest import REPO
from vae_jax import config_lib
from vae_jax import models

sys.path.insert(0, os.path.join(REPO, "experiments"))
nll_flops = importlib.import_module("nll_flops")


def _mlp_vae(event_shape=(4, 4, 1)):
  config = config_lib.base().model
  config.hidden, config.latent_dim, config.activation = (16,), 4, "tanh"
  model = models.create_model(config, event_shape)
  return model, models.init_params(model, jax.random.key(0), event_shape)


def test_flop_count_includes_every_chunk():
  model, params = _mlp_vae()
  counts = [nll_flops.batch_flops(model, params, 8, (4, 4, 1), num_samples=40,
                                  chunk_size=c) for c in (10, 40)]
  # Four chunks of 10 or one of 40: the same work, counted the same.
  # (Counting the loop body once would make the first a quarter of this.)
  assert counts[0] == pytest.approx(counts[1], rel=0.05), counts


ae_vs_pca = importlib.import_module("ae_vs_pca")


def test_ae_vs_pca_configs_are_valid_and_linear_is_linear():
  for kind in ("linear", "deep"):
    config = ae_vs_pca.model_config(kind, 30, 1.0)
    config_lib.validate(config)
    assert config.evals.ae_pca.enabled and config.model.latent_dim == 30
  linear = ae_vs_pca.model_config("linear", 5, 1.0).model
  model = models.create_model(linear, (28, 28, 1))
  params = models.init_params(model, jax.random.key(0), (28, 28, 1))
  # 784 -> 5 -> 784, one dense layer each way: linear in x.
  shapes = jax.tree.map(lambda a: a.shape, params)["params"]
  assert shapes["encoder"]["code"]["kernel"] == (784, 5)
  assert shapes["decoder"]["loc"]["kernel"] == (5, 784)
  assert set(shapes["encoder"]) == {"code"}
  assert set(shapes["decoder"]) == {"loc"}


def test_ae_vs_pca_writes_table_and_plot(tmp_path):
  rows = [{"kind": kind, "k": k, "epochs": 1.0, "sse": sse, "psnr": 15.0,
           "pca_sse": 13.87 if k == 30 else 40.0, "pca_psnr": 17.9,
           "principal_angles_deg": [0.5, 0.1]}
          for kind, k, sse in (("linear", 2, 44.0), ("linear", 30, 14.0),
                               ("deep", 30, 5.0))]
  ae_vs_pca.write(rows, str(tmp_path), 12.0)
  md = (tmp_path / "ae_vs_pca.md").read_text()
  assert "| 30 | 13.87 (17.90 dB) | 14.00 (15.00 dB), 1 epochs | 5.00" in md
  assert "| 2 | 40.00 (17.90 dB) | 44.00 (15.00 dB), 1 epochs | not run |" in md
  assert (tmp_path / "ae_vs_pca.png").stat().st_size > 1000
