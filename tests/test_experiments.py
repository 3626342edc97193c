"""Tests of the scripts in experiments/ (imported as modules, not run)."""

import importlib
import os
import re
import sys

import jax
import jax.numpy as jnp
import pytest

from conftest import REPO
from vae_jax import compiler
from vae_jax import config_lib
from vae_jax import models
from vae_jax.errors import UserError

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


benchmark_sweep = importlib.import_module("benchmark_sweep")


def test_step_breakdown_sorts_the_loop_body_by_kind():
  batch = 32

  def train(w, x, key, n):
    def body(i, carry):
      w, total = carry
      keep = jax.random.uniform(jax.random.fold_in(key, i), x.shape) < 0.5
      xi = jnp.where(keep, x, 0.0)
      h = jnp.tanh(xi @ w)  # [batch, 128]: per-example.
      return w - 0.1 * (xi.T @ (1 - h**2)), total + jnp.sum(h)  # Per-param.
    return jax.lax.fori_loop(0, n, body, (w, 0.0))

  # Compiled as the project compiles its steps (no YNNPACK fusions).
  hlo = compiler.jit(train, tree_reductions=False).lower(
      jnp.ones((256, 128)), jnp.ones((batch, 256)), jax.random.key(0),
      3).compile().as_text()
  kinds = benchmark_sweep._step_body_kinds(hlo, batch)
  assert set(kinds.values()) == set(benchmark_sweep.KINDS), kinds
  assert sum(k == "matmuls" for k in kinds.values()) == 2, kinds
  per_param = [n for n, k in kinds.items() if k == benchmark_sweep.KINDS[3]]
  assert any(f"%{n} = f32[256,128]" in hlo for n in per_param), per_param


@pytest.mark.parametrize("sizes,host_devices,message", [
    (["1", "x"], 1, "--group_sizes must be positive integers, got '1,x'"),
    (["0", "8"], 1, "--group_sizes must be positive integers, got '0,8'"),
    (["1", "4", "6"], 4, "Each group size above 1 must divide by "
                         "--host_devices=4, got --group_sizes=1,4,6"),
])
def test_sweep_benchmark_refuses_bad_group_sizes(sizes, host_devices,
                                                 message):
  with pytest.raises(UserError, match=re.escape(message)):
    benchmark_sweep.group_sizes(sizes, host_devices)
  assert benchmark_sweep.group_sizes(["1", "2", "8"], 1) == [1, 2, 8]
