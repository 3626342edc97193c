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
