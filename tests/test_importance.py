"""Tests for the importance-sampled log-likelihood and the IWAE objective.

The pure estimator (`vae_jax.importance`) on small models, no data: the
fidelity test uses a linear-Gaussian VAE (probabilistic PCA), whose
log p(x) is known in closed form, computed here in float64 numpy. The nll
evaluator on a trained workdir is tested in test_evaluators.py.
"""

import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from vae_jax import batching
from vae_jax import config_lib
from vae_jax import importance
from vae_jax import losses
from vae_jax import models
from vae_jax import objectives
from vae_jax.errors import UserError

D, Z = 6, 2  # PPCA data and latent dimensions.


class LinearGaussianVAE(nn.Module):
  """p(z) = N(0, I), p(x|z) = N(W z + b, sigma^2 I), q(z|x) linear, diagonal.

  Exposes `encode` / `decode` like `models.VAE`; parameters are given by
  hand (`ppca_params`), never initialized.
  """

  @nn.compact
  def _params(self):
    zeros = nn.initializers.zeros
    return {name: self.param(name, zeros, shape) for name, shape in (
        ("w", (D, Z)), ("b", (D,)), ("log_sigma", ()), ("enc_w", (D, Z)),
        ("enc_b", (Z,)), ("enc_log_var", (Z,)))}

  def encode(self, x):
    p = self._params()
    mean = x @ p["enc_w"] + p["enc_b"]
    return models.Posterior(
        mean=mean, log_var=jnp.broadcast_to(p["enc_log_var"], mean.shape))

  def decode(self, z):
    p = self._params()
    return models.Likelihood(loc=z @ p["w"].T + p["b"],
                             log_scale=p["log_sigma"], name="gaussian",
                             event_ndim=1)


def ppca(seed=0, n=64, sigma=0.5, mean_noise=0.1, var_factor=1.5):
  """A PPCA model, a proposal near its posterior, data and exact log p(x).

  The exact posterior is N(M^-1 W^T (x - b), sigma^2 M^-1) with
  M = W^T W + sigma^2 I: a full covariance, so the diagonal, widened and
  shifted proposal leaves importance sampling real work to do.
  """
  rng = np.random.default_rng(seed)
  w = rng.normal(size=(D, Z))
  b = rng.normal(size=D)
  m_inv = np.linalg.inv(w.T @ w + sigma**2 * np.eye(Z))
  enc_w = w @ m_inv + mean_noise * rng.normal(size=(D, Z))
  params = {"params": {
      "w": w, "b": b, "log_sigma": np.log(sigma), "enc_w": enc_w,
      "enc_b": -b @ enc_w,
      "enc_log_var": np.log(var_factor * sigma**2 * np.diag(m_inv))}}
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  cov = w @ w.T + sigma**2 * np.eye(D)
  x = rng.multivariate_normal(b, cov, size=n)
  diff = x - b
  _, logdet = np.linalg.slogdet(cov)
  log_px = -0.5 * (np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff)
                   + logdet + D * math.log(2 * math.pi))
  return LinearGaussianVAE(), params, jnp.asarray(x, jnp.float32), log_px


def mlp_vae(latent_dim=4, event_shape=(4, 4, 1), seed=0):
  config = config_lib.base().model
  config.hidden = (16,)
  config.latent_dim = latent_dim
  config.activation = "tanh"
  model = models.create_model(config, event_shape)
  params = models.init_params(model, jax.random.key(seed), event_shape)
  return model, params


def binary_images(n, event_shape=(4, 4, 1), seed=0):
  rng = np.random.default_rng(seed)
  return np.where(rng.random((n, *event_shape)) < 0.3, 255, 0).astype(np.uint8)


# --- the estimator ------------------------------------------------------------


def test_importance_sampling_matches_exact_ppca_likelihood():
  model, params, x, exact = ppca()
  estimate = jax.jit(lambda p, v: importance.importance_sampled_log_likelihood(
      model, p, v, jax.random.key(1), num_samples=5000, chunk_size=1000))(
          params, x)
  assert estimate.shape == (64,)
  error = np.asarray(estimate, np.float64) - exact
  assert abs(error.mean()) < 0.05, error.mean()
  assert np.max(np.abs(error)) < 0.2, error
  # The proposal is not the posterior: the ELBO is clearly looser.
  log_w = jax.jit(objectives.log_importance_weights, static_argnums=(0, 4))(
      model, params, x, jax.random.key(2), 1000)
  elbo_gap = exact.mean() - float(jnp.mean(log_w))
  assert elbo_gap > 0.2, elbo_gap


def test_iwae_bound_is_above_the_elbo_and_grows_with_k():
  # A deliberately poor proposal, so the bounds are far apart.
  model, params, x, exact = ppca(n=256, mean_noise=0.5, var_factor=0.5)
  ks = (1, 5, 50, 500)

  @jax.jit
  def bounds_of(params, x):
    log_w = objectives.log_importance_weights(model, params, x,
                                              jax.random.key(0), 500)
    out = []
    for k in ks:
      # E[IWAE_k] from all 500 samples, split into 500 / k disjoint groups.
      groups = log_w.reshape(500 // k, k, 256).transpose(1, 0, 2)
      bound = objectives.iwae_bound(groups)
      # Jensen, sample by sample: the same k samples' ELBO is never above.
      jensen = jnp.all(bound >= jnp.mean(groups, axis=0) - 1e-4)
      out.append((jnp.mean(bound), jensen))
    return out, jnp.mean(log_w)

  out, elbo = bounds_of(params, x)
  assert all(bool(jensen) for _, jensen in out)
  bounds = [float(b) for b, _ in out]
  assert bounds[0] == pytest.approx(float(elbo), abs=1e-4)
  assert bounds[0] + 0.3 < bounds[1] < bounds[2] < bounds[3], bounds
  assert bounds[3] < exact.mean() + 0.05


def test_iwae_bound_is_stable_for_very_negative_weights():
  log_w = jnp.array([[-1e5, -3e4], [-1e5 - 1.0, -3e4]], jnp.float32)
  got = objectives.iwae_bound(log_w)
  expected = [-1e5 + math.log((1 + math.exp(-1.0)) / 2), -3e4]
  np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_chunked_estimate_is_the_log_mean_exp_of_the_same_weights():
  """The running log-sum-exp equals a one-shot logsumexp over all samples.

  Data shifted far from the model make log w ~ -1e4 nats, where exp alone
  underflows: the running maximum must keep it finite.
  """
  model, params, x, _ = ppca(n=8)
  x = x + 60.0
  k, rng = 23, jax.random.key(3)

  @jax.jit
  def one_shot(params, x):
    posterior = model.apply(params, x, method="encode")
    eps = importance._draw_eps(importance._example_keys(rng, jnp.arange(8)),
                               jnp.arange(k), Z, jnp.float32)
    z = posterior.mean + jnp.exp(0.5 * posterior.log_var) * eps
    log_w = objectives.importance_terms(model, params, x, posterior,
                                        z).log_weights
    return jnp.max(log_w), objectives.iwae_bound(log_w)

  max_log_w, expected = one_shot(params, x)
  assert float(max_log_w) < -1000
  estimate = jax.jit(importance.importance_sampled_log_likelihood,
                     static_argnums=(0, 4, 5))
  for chunk in (5, 100):  # A partial last chunk; one chunk larger than K.
    got = estimate(model, params, x, rng, k, chunk)
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_estimate_is_exactly_invariant_to_chunk_and_batch_size():
  model, params = mlp_vae()
  x = jnp.asarray(binary_images(12), jnp.float32) / 255.0
  rng = jax.random.key(4)
  estimate = jax.jit(importance.importance_sampled_log_likelihood,
                     static_argnums=(0, 4, 5))
  ids = jnp.arange(12)
  reference = estimate(model, params, x, rng, 60, 60, ids)
  for chunk in (1, 7):  # 7 leaves a partial last chunk.
    np.testing.assert_allclose(estimate(model, params, x, rng, 60, chunk, ids),
                               reference, rtol=1e-6, atol=1e-5)
  # Examples keep their samples in any batch order (ids say who they are).
  shuffled = estimate(model, params, x[::-1], rng, 60, 60, ids[::-1])
  np.testing.assert_allclose(shuffled[::-1], reference, rtol=1e-6, atol=1e-5)
  # ...and another key gives other samples.
  other = estimate(model, params, x, jax.random.key(5), 60, 60, ids)
  assert not np.allclose(other, reference, rtol=0, atol=1e-4)


def test_bad_sizes_are_user_errors():
  model, params, x, _ = ppca(n=2)
  with pytest.raises(UserError, match="importance samples"):
    importance.importance_sampled_log_likelihood(model, params, x,
                                                 jax.random.key(0), 0, 10)
  with pytest.raises(UserError, match="chunk size"):
    importance.importance_sampled_log_likelihood(model, params, x,
                                                 jax.random.key(0), 10, 0)
  images, mask = batching.eval_batches(binary_images(4), 4)
  model, params = mlp_vae()
  for k, chunk, match in ((0, 10, "importance samples"),
                          (10, 0, "chunk size")):
    with pytest.raises(UserError, match=match):
      importance.evaluate_batch(model, params, images[0], mask[0],
                                jax.random.key(0), 0, num_samples=k,
                                chunk_size=chunk)


# --- padded batches, summaries and diagnostics --------------------------------


def _dataset_metrics(model, params, images, batch_size, k=16, chunk=5):
  """`evaluate_batch` over padded batches then `summarize`, as evaluators/nll.py.

  One jitted function of (all batches, mask, key, i) scores batch i, whose
  first example is i * batch_size, under the same key for every batch; the
  host stacks the outputs.
  """
  batches, mask = batching.eval_batches(images, batch_size)
  # Padding holds garbage, not zeros: only the mask may keep it out.
  batches = np.where(mask[..., None, None, None] > 0, batches,
                     binary_images(batches.shape[0] * batch_size,
                                   seed=9).reshape(batches.shape))
  rng = jax.random.key(0)

  @jax.jit
  def batch(params, images, mask, rng, i):
    return importance.evaluate_batch(model, params, images[i], mask[i], rng,
                                     i * batch_size, num_samples=k,
                                     chunk_size=chunk)

  outputs = [jax.device_get(batch(params, batches, mask, rng, jnp.int32(i)))
             for i in range(len(batches))]
  stacked = {name: np.stack([o[name] for o in outputs]) for name in outputs[0]}
  return stacked, importance.summarize(stacked, mask)


def test_batches_count_every_example_once():
  model, params = mlp_vae()
  images = binary_images(50)
  out_full, full = _dataset_metrics(model, params, images, batch_size=50)
  out_padded, padded = _dataset_metrics(model, params, images, batch_size=16)
  assert out_padded["log_px"].shape == (4, 16)
  assert out_padded["nelbo_k"].shape == (4, 16)
  assert out_padded["kl_per_dim"].shape == (4, 4)
  # Each example has the same samples however it is batched.
  np.testing.assert_allclose(np.ravel(out_padded["log_px"])[:50],
                             np.ravel(out_full["log_px"]), rtol=1e-6)
  np.testing.assert_allclose(np.ravel(out_padded["nelbo_k"])[:50],
                             np.ravel(out_full["nelbo_k"]), rtol=1e-6)
  assert np.all(np.ravel(out_padded["log_px"])[50:] == 0)
  assert np.all(np.ravel(out_padded["nelbo_k"])[50:] == 0)
  assert set(full) == {"nll", "nll_stderr", "nelbo_k", "nelbo_k_stderr",
                       "elbo_gap", "active_units", "kl_per_dim",
                       "posterior_mean_variance"}
  for name in ("nll", "nelbo_k", "elbo_gap", "nll_stderr", "nelbo_k_stderr"):
    assert padded[name] == pytest.approx(full[name], rel=1e-5), name
  assert padded["active_units"] == full["active_units"]
  np.testing.assert_allclose(padded["kl_per_dim"], full["kl_per_dim"],
                             rtol=1e-5)
  np.testing.assert_allclose(padded["posterior_mean_variance"],
                             full["posterior_mean_variance"], rtol=1e-4,
                             atol=1e-7)
  # Definitions: the means and standard errors over the 50 real examples,
  # the bounds' order and the closed-form KL of q(z|x) per latent unit.
  log_px = np.ravel(out_full["log_px"]).astype(np.float64)
  nelbo_k = np.ravel(out_full["nelbo_k"]).astype(np.float64)
  assert full["nll"] == pytest.approx(-log_px.mean(), rel=1e-6)
  assert full["nelbo_k"] == pytest.approx(nelbo_k.mean(), rel=1e-6)
  assert full["nll"] <= full["nelbo_k"]
  assert np.all(-log_px <= nelbo_k + 1e-4)  # Jensen, example by example.
  assert full["elbo_gap"] == pytest.approx(full["nelbo_k"] - full["nll"])
  assert full["nll_stderr"] == pytest.approx(
      np.std(log_px, ddof=1) / math.sqrt(50), rel=1e-5)
  assert full["nelbo_k_stderr"] == pytest.approx(
      np.std(nelbo_k, ddof=1) / math.sqrt(50), rel=1e-5)
  x = jnp.asarray(images, jnp.float32) / 255.0
  posterior = model.apply(params, x, method="encode")
  kl_per_dim = np.mean(np.asarray(losses.kl_to_std_normal(
      posterior.mean, posterior.log_var), np.float64), axis=0)
  np.testing.assert_allclose(full["kl_per_dim"], kl_per_dim, rtol=1e-5)
  mean = np.asarray(posterior.mean, np.float64)
  np.testing.assert_allclose(full["posterior_mean_variance"],
                             mean.var(axis=0), rtol=1e-3, atol=1e-7)


def test_active_units_ignore_latents_the_encoder_does_not_use():
  model, params = mlp_vae(latent_dim=5)
  mean_layer = params["params"]["encoder"]["mean"]
  dead = np.array([True, False, True, False, False])
  params = jax.tree.map(lambda a: a, params)  # A copy to edit.
  params["params"]["encoder"]["mean"] = {
      "kernel": jnp.where(dead, 0.0, 10.0 * mean_layer["kernel"]),
      "bias": jnp.where(dead, 0.3, mean_layer["bias"])}
  _, metrics = _dataset_metrics(model, params, binary_images(200),
                                batch_size=64)
  variance = np.asarray(metrics["posterior_mean_variance"])
  assert variance.shape == (5,) and len(metrics["kl_per_dim"]) == 5
  assert np.all(variance[dead] < 1e-6), variance
  assert np.all(variance[~dead] > importance.ACTIVE_UNIT_THRESHOLD), variance
  assert metrics["active_units"] == 3


# --- the IWAE objective ------------------------------------------------------


def _objective(name, k, model):
  config = config_lib.base().objective
  config.name, config.num_samples = name, k
  objectives.validate_config(config)
  return jax.jit(objectives.create(config, model))


def test_iwae_with_one_sample_is_the_elbo():
  model, params = mlp_vae()
  x = jnp.asarray(binary_images(4096), jnp.float32) / 255.0
  rng = jax.random.key(6)
  hparams = {"beta": jnp.float32(1.0)}
  elbo_loss, elbo = _objective("elbo", 1, model)(params, x, rng, hparams)
  iwae_loss, iwae = _objective("iwae", 1, model)(params, x, rng, {})
  # The same metrics as the elbo objective: a run reads the same either way.
  assert set(iwae) == set(elbo) == {"loss", "recon", "kl", "nelbo"}
  # The same latent sample: identical reconstruction and closed-form KL.
  for name in ("recon", "kl", "nelbo"):
    np.testing.assert_allclose(iwae[name], elbo[name], rtol=1e-6, atol=1e-5)
  # The losses differ by the Monte Carlo KL minus the closed form: zero mean.
  diff = np.asarray(iwae_loss - elbo_loss, np.float64)
  assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(diff)) + 1e-6
  # ... and exactly, with the same sample: loss = -log w_1.
  log_w = jax.jit(objectives.log_importance_weights, static_argnums=(0, 4))(
      model, params, x, rng, 1)
  np.testing.assert_allclose(iwae_loss, -log_w[0], rtol=1e-6)


def test_iwae_objective_is_tighter_with_more_samples():
  model, params = mlp_vae()
  x = jnp.asarray(binary_images(512), jnp.float32) / 255.0
  assert objectives.HPARAMS["iwae"] == ()  # No per-model weight to pass.
  losses_k = [float(jnp.mean(_objective("iwae", k, model)(
      params, x, jax.random.key(7), {})[0])) for k in (1, 10)]
  assert losses_k[1] < losses_k[0]
  # Multi-sample ELBO: the same bound in expectation as one sample.
  loss, metrics = _objective("elbo", 10, model)(
      params, x, jax.random.key(7), {"beta": jnp.float32(1.0)})
  assert loss.shape == (512,) and set(metrics) == {"loss", "recon", "kl",
                                                   "nelbo"}
  assert float(jnp.mean(loss)) > losses_k[1]


def test_objective_config_validation():
  for bad, match in (({"num_samples": 0}, "num_samples"),
                     ({"num_samples": 2.5}, "num_samples"),
                     ({"beta": 0.5, "num_samples": 5}, "beta")):
    # As read from a config.json (untyped): the checks must catch it.
    config = ml_collections.ConfigDict(
        {**config_lib.base().objective.to_dict(), "name": "iwae", **bad})
    with pytest.raises(UserError, match=match):
      objectives.validate_config(config)
  # The schema's defaults: a single-sample ELBO, which validates.
  default = config_lib.base().objective
  objectives.validate_config(default, config_lib.base().model)
  assert default.name == "elbo" and default.num_samples == 1


def test_nll_configs_load_and_validate():
  for name, objective, k in (("mnist_vae_nll.py", "elbo", 1),
                             ("mnist_iwae.py", "iwae", 50)):
    path = os.path.join(REPO, "configs", name)
    config = config_lib.get_config(path)
    config_lib.validate(config)
    assert config.objective.name == objective
    assert config.objective.num_samples == k
    assert config.model.hidden == (200, 200) and config.model.latent_dim == 50
    assert config.evals.nll.enabled
    assert config.evals.nll.num_samples == 5000
    assert config.data.binarization == "dynamic"
    local = config_lib.get_config(path, "runlocal")
    config_lib.validate(local)
    assert local.training.num_epochs < 1
