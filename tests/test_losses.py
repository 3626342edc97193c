"""Tests for vae_jax.losses against hand-computed and closed-form values.

Expected values are written out in float64 numpy from the textbook formulas,
not from the package's own rewriting of them, so a sign, constant or axis
slip in the package fails here.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import losses

_LOG_2PI = math.log(2.0 * math.pi)


def _np_sigmoid(logits):
  return 1.0 / (1.0 + np.exp(-logits))


def _np_bernoulli(logits, x):
  """x log p + (1 - x) log(1 - p) per element, float64, moderate logits."""
  p = _np_sigmoid(np.asarray(logits, np.float64))
  x = np.asarray(x, np.float64)
  return x * np.log(p) + (1.0 - x) * np.log(1.0 - p)


def _np_gaussian(x, mean, scale):
  """log N(x | mean, scale^2) per element, float64."""
  x, mean, scale = (np.asarray(a, np.float64) for a in (x, mean, scale))
  return (-0.5 * ((x - mean) / scale)**2 - np.log(scale)
          - 0.5 * math.log(2.0 * math.pi))


# --- bernoulli_log_prob -------------------------------------------------------


def test_bernoulli_log_prob_matches_hand_computed_values():
  logits = np.array([[-3.0, 0.0, 2.5, 2.5],
                     [-3.0, 0.0, 2.5, -3.0]], np.float32)
  x = np.array([[0.0, 1.0, 1.0, 0.3],
                [1.0, 0.0, 0.0, 0.75]], np.float32)
  # By hand: logit 0 is p = 1/2, so each term there is log(1/2).
  expected = _np_bernoulli(logits, x).sum(-1)
  assert np.isclose(_np_bernoulli(0.0, 1.0), math.log(0.5))
  got = losses.bernoulli_log_prob(jnp.asarray(logits), jnp.asarray(x),
                                  event_ndim=1)
  assert got.shape == (2,)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_bernoulli_log_prob_single_terms():
  # Each element on its own, event_ndim=0: no summation at all.
  logits = np.array([-3.0, -3.0, 0.0, 2.5, 2.5, 2.5], np.float32)
  x = np.array([0.0, 1.0, 0.5, 0.0, 1.0, 0.2], np.float32)
  got = losses.bernoulli_log_prob(jnp.asarray(logits), jnp.asarray(x),
                                  event_ndim=0)
  assert got.shape == (6,)
  np.testing.assert_allclose(got, _np_bernoulli(logits, x), rtol=1e-6,
                             atol=1e-6)


def test_bernoulli_log_prob_extreme_logits_are_finite_and_correct():
  # sigmoid(+-100) is 1 or 0 in floating point, so the naive formula gives
  # log(0) = -inf. The true values: with l = 100, log p = -log1p(e^-100) ~ 0
  # and log(1 - p) = -100 - log1p(e^-100) ~ -100; symmetric for l = -100.
  logits = np.array([100.0, 100.0, 100.0, -100.0, -100.0, -100.0], np.float32)
  x = np.array([1.0, 0.0, 0.25, 1.0, 0.0, 0.25], np.float32)
  expected = np.array([0.0, -100.0, -75.0, -100.0, 0.0, -25.0])
  got = losses.bernoulli_log_prob(jnp.asarray(logits), jnp.asarray(x),
                                  event_ndim=0)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  grads = jax.grad(lambda lg: jnp.sum(
      losses.bernoulli_log_prob(lg, jnp.asarray(x), event_ndim=0)))(
          jnp.asarray(logits))
  # d/dl [x l - softplus(l)] = x - sigmoid(l).
  np.testing.assert_allclose(grads, x - (logits > 0), atol=1e-6)


def test_bernoulli_log_prob_sums_image_event_axes():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 4, 1)).astype(np.float32) * 3
  x = rng.uniform(size=(2, 3, 4, 1)).astype(np.float32)
  per_pixel = _np_bernoulli(logits, x)
  got = losses.bernoulli_log_prob(jnp.asarray(logits), jnp.asarray(x),
                                  event_ndim=3)
  assert got.shape == (2,)
  np.testing.assert_allclose(got, per_pixel.sum(axis=(1, 2, 3)), rtol=1e-5)


# --- gaussian_log_prob --------------------------------------------------------


def test_gaussian_log_prob_fixed_scale():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 4, 2, 1)).astype(np.float32)
  mean = rng.normal(size=(3, 4, 2, 1)).astype(np.float32)
  scale = 0.5
  got = losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean),
                                 jnp.asarray(math.log(scale)), event_ndim=3)
  assert got.shape == (3,)
  expected = _np_gaussian(x, mean, scale).sum(axis=(1, 2, 3))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_gaussian_log_prob_unit_scale_at_mean_is_the_constant():
  # x == mean, scale 1: every dimension contributes exactly -0.5 log(2 pi).
  x = jnp.ones((2, 5))
  got = losses.gaussian_log_prob(x, x, jnp.zeros(()), event_ndim=1)
  np.testing.assert_allclose(got, np.full(2, -5 * 0.5 * _LOG_2PI), rtol=1e-6)


def test_gaussian_log_prob_per_pixel_log_scale():
  rng = np.random.default_rng(2)
  shape = (2, 3, 3, 2)
  x = rng.normal(size=shape).astype(np.float32)
  mean = rng.normal(size=shape).astype(np.float32)
  log_scale = rng.uniform(-1.5, 1.0, size=shape).astype(np.float32)
  got = losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean),
                                 jnp.asarray(log_scale), event_ndim=3)
  expected = _np_gaussian(x, mean, np.exp(np.float64(log_scale)))
  np.testing.assert_allclose(got, expected.sum(axis=(1, 2, 3)), rtol=1e-5)
  # A log_scale shared over the batch ([H, W, C]) broadcasts the same way.
  got_shared = losses.gaussian_log_prob(
      jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_scale[0]),
      event_ndim=3)
  expected_shared = _np_gaussian(x, mean, np.exp(np.float64(log_scale[0])))
  np.testing.assert_allclose(got_shared, expected_shared.sum(axis=(1, 2, 3)),
                             rtol=1e-5)


@pytest.mark.parametrize("event_ndim", [0, 1, 2, 3])
def test_gaussian_log_prob_event_ndim_sums_trailing_axes(event_ndim):
  rng = np.random.default_rng(3)
  shape = (2, 3, 4, 5)
  x = rng.normal(size=shape).astype(np.float32)
  mean = rng.normal(size=shape).astype(np.float32)
  got = losses.gaussian_log_prob(jnp.asarray(x), jnp.asarray(mean),
                                 jnp.asarray(np.log(0.7)), event_ndim)
  per_element = _np_gaussian(x, mean, 0.7)
  axes = tuple(range(4 - event_ndim, 4))
  assert got.shape == shape[:4 - event_ndim]
  np.testing.assert_allclose(got, per_element.sum(axis=axes), rtol=1e-5,
                             atol=1e-5)


def test_gaussian_log_prob_scalar_log_scale_counts_every_dimension():
  # The -log s - 0.5 log 2 pi constant belongs to every dimension, even when
  # log_scale is a scalar: D = 3 * 4 * 2 = 24 dims here.
  x = jnp.zeros((2, 3, 4, 2))
  got = losses.gaussian_log_prob(x, x, jnp.asarray(math.log(2.0)),
                                 event_ndim=3)
  np.testing.assert_allclose(
      got, np.full(2, -24 * (math.log(2.0) + 0.5 * _LOG_2PI)), rtol=1e-6)


@pytest.mark.parametrize("mean,scale", [(0.3, 0.05), (-0.2, 0.01),
                                        (1.3, 0.2), (0.0, 0.01)])
def test_discretized_gaussian_is_a_distribution_over_256_levels(mean, scale):
  from scipy import stats  # pylint: disable=g-import-not-at-top
  levels = jnp.arange(256, dtype=jnp.float32) / 255
  log_p = losses.discretized_gaussian_log_prob(
      levels, jnp.full(256, mean), jnp.log(jnp.float32(scale)), 0)
  p = np.exp(np.asarray(log_p, np.float64))
  edges = (np.arange(257) - 0.5) / 255
  edges[0], edges[-1] = -np.inf, np.inf  # The tails go to 0 and 255.
  np.testing.assert_allclose(p, np.diff(stats.norm.cdf(edges, mean, scale)),
                             atol=2e-7)
  assert p.sum() == pytest.approx(1.0, abs=1e-6)
  assert np.all(np.isfinite(np.asarray(log_p)))  # Far bins too.
  grad = jax.grad(lambda m: jnp.sum(losses.discretized_gaussian_log_prob(
      levels, m, jnp.log(jnp.float32(scale)), 0)))(jnp.full(256, mean))
  assert np.all(np.isfinite(np.asarray(grad)))


def test_diag_and_std_normal_log_prob_match_formula():
  rng = np.random.default_rng(4)
  z = rng.normal(size=(4, 3)).astype(np.float32)
  mean = rng.normal(size=(4, 3)).astype(np.float32)
  log_var = rng.uniform(-1, 1, size=(4, 3)).astype(np.float32)
  np.testing.assert_allclose(
      losses.diag_gaussian_log_prob(jnp.asarray(z), jnp.asarray(mean),
                                    jnp.asarray(log_var)),
      _np_gaussian(z, mean, np.exp(0.5 * np.float64(log_var))).sum(-1),
      rtol=1e-5)
  np.testing.assert_allclose(losses.std_normal_log_prob(jnp.asarray(z)),
                             _np_gaussian(z, 0.0, 1.0).sum(-1), rtol=1e-5)


# --- kl_to_std_normal ---------------------------------------------------------


def test_kl_to_std_normal_is_zero_at_the_prior():
  kl = losses.kl_to_std_normal(jnp.zeros((2, 3)), jnp.zeros((2, 3)))
  assert kl.shape == (2, 3)
  np.testing.assert_array_equal(kl, np.zeros((2, 3)))


def test_kl_to_std_normal_hand_values():
  # mean 1, var 1: KL = 0.5. mean 0, var e: KL = 0.5 (e - 1 - 1).
  kl = losses.kl_to_std_normal(jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(kl, [0.5, 0.5 * (math.e - 2.0)], rtol=1e-6)


def test_kl_to_std_normal_is_finite_wherever_it_fits_in_float32():
  # exp(89) overflows float32 (max 3.4e38), but 0.5 (e^89 - 1 - 89) =
  # 2.2e38 does not; from log_var = 89.5 the KL itself overflows.
  log_var = jnp.array([-80.0, 0.5, 60.0, 88.0, 89.0, 89.4], jnp.float32)
  kl = np.asarray(losses.kl_to_std_normal(jnp.zeros(6), log_var))
  v = np.asarray(log_var, np.float64)
  np.testing.assert_allclose(kl, 0.5 * (np.exp(v) - 1.0 - v), rtol=1e-5)
  assert np.isinf(losses.kl_to_std_normal(jnp.zeros(1), jnp.full(1, 89.5)))


def _mc_kl(key, mean, log_var, num_samples):
  """Monte Carlo KL(q || N(0, I)) over the last axis: (estimate, std error)."""
  z = losses.reparameterize(key, mean, log_var, num_samples)
  log_ratio = (losses.diag_gaussian_log_prob(z, mean, log_var)
               - losses.std_normal_log_prob(z))  # [S, ...]
  log_ratio = np.asarray(log_ratio, np.float64)
  return (log_ratio.mean(0),
          log_ratio.std(0, ddof=1) / math.sqrt(num_samples))


def test_kl_to_std_normal_per_unit_matches_monte_carlo():
  mean = jnp.array([0.5, -1.0, 2.0, 0.0, 0.3])
  log_var = jnp.array([0.0, -1.0, 1.0, -2.0, 0.7])
  kl = losses.kl_to_std_normal(mean, log_var)
  assert kl.shape == (5,)
  # Each unit as its own one-dimensional Gaussian: inputs [Z, 1].
  est, se = _mc_kl(jax.random.key(0), mean[:, None], log_var[:, None],
                   num_samples=100_000)
  np.testing.assert_array_less(np.abs(np.asarray(kl) - est), 5 * se + 1e-4)


def test_kl_to_std_normal_per_example_matches_monte_carlo():
  mean = jnp.array([[0.5, -1.0, 2.0], [0.0, 0.1, -0.4]])
  log_var = jnp.array([[0.0, -1.0, 1.0], [-2.0, 0.7, 0.0]])
  kl = losses.kl_to_std_normal(mean, log_var).sum(-1)  # [B]
  est, se = _mc_kl(jax.random.key(1), mean, log_var, num_samples=100_000)
  assert est.shape == kl.shape == (2,)
  np.testing.assert_array_less(np.abs(np.asarray(kl) - est), 5 * se + 1e-4)


# --- reparameterize -----------------------------------------------------------


def test_reparameterize_shapes():
  mean = jnp.zeros((4, 3))
  key = jax.random.key(0)
  assert losses.reparameterize(key, mean, mean).shape == (4, 3)
  assert losses.reparameterize(key, mean, mean, num_samples=7).shape == (7, 4,
                                                                         3)


def test_reparameterize_is_deterministic_per_key():
  mean, log_var = jnp.zeros((4, 3)), jnp.zeros((4, 3))
  a = losses.reparameterize(jax.random.key(0), mean, log_var)
  b = losses.reparameterize(jax.random.key(0), mean, log_var)
  c = losses.reparameterize(jax.random.key(1), mean, log_var)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_reparameterize_sample_moments():
  mean = jnp.array([[1.0, -2.0, 0.0], [0.5, 3.0, -1.0]])
  log_var = jnp.array([[0.0, 2.0, -2.0], [1.0, -1.0, 0.5]])
  n = 40_000
  z = np.asarray(losses.reparameterize(jax.random.key(3), mean, log_var,
                                       num_samples=n), np.float64)
  std = np.exp(0.5 * np.asarray(log_var, np.float64))
  # Standard errors: std / sqrt(n) for the mean, ~std / sqrt(2n) for the std.
  np.testing.assert_array_less(np.abs(z.mean(0) - mean), 5 * std / math.sqrt(n))
  np.testing.assert_array_less(np.abs(z.std(0) - std),
                               5 * std / math.sqrt(2 * n))
  # Each example and unit gets its own noise, not one eps broadcast over B.
  eps = (z - np.asarray(mean, np.float64)) / std
  assert not np.allclose(eps[:, 0], eps[:, 1])


# --- negative_elbo and bits_per_dim -------------------------------------------


def test_negative_elbo_with_beta():
  log_lik = jnp.array([-100.0, -50.0])
  kl = jnp.array([10.0, 4.0])
  np.testing.assert_allclose(losses.negative_elbo(log_lik, kl), [110.0, 54.0])
  np.testing.assert_allclose(losses.negative_elbo(log_lik, kl, beta=0.5),
                             [105.0, 52.0])
  np.testing.assert_allclose(
      losses.negative_elbo(log_lik, kl, beta=jnp.asarray(4.0)), [140.0, 66.0])
  np.testing.assert_allclose(losses.negative_elbo(log_lik, kl, beta=0.0),
                             [100.0, 50.0])


def test_bits_per_dim():
  assert losses.bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)
  np.testing.assert_allclose(
      losses.bits_per_dim(jnp.array([0.0, 784 * math.log(2.0) * 3.5]), 784),
      [0.0, 3.5], rtol=1e-6)
  # 100 nats over 3 dims: 100 / (3 ln 2) bits per dim.
  assert losses.bits_per_dim(100.0, 3) == pytest.approx(100 / (3 * math.log(2)))
