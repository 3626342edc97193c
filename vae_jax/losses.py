"""Per-example log-densities and ELBO terms.

Every function here is pure and returns one value per example, shape `[B]`
(or `[..., B]` when leading sample axes are present): the sum over all event
dimensions (pixels, latent units). Reductions over the batch are left to the
caller, so training can average and evaluation can mask padding.

Units are nats. `bits_per_dim` converts.
"""

import math

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: jax.Array, event_ndim: int) -> jax.Array:
  return jnp.sum(x, axis=tuple(range(x.ndim - event_ndim, x.ndim)))


def bernoulli_log_prob(logits: jax.Array, x: jax.Array,
                       event_ndim: int) -> jax.Array:
  """log Bernoulli(x | sigmoid(logits)), summed over the event dimensions.

  log p(x) = x log s(l) + (1 - x) log(1 - s(l)) with s the sigmoid. Using
  log s(l) = l - softplus(l) and log(1 - s(l)) = -softplus(l) this is
  x * l - softplus(l), which is exact and stable for any logit. For x in
  (0, 1) the same expression is the (negative) binary cross-entropy.

  Args:
    logits: `[..., *event]` decoder logits.
    x: `[..., *event]` targets in [0, 1].
    event_ndim: how many trailing axes form one example (3 for HWC images).

  Returns:
    `[...]` log-likelihood per example, in nats.
  """
  return _sum_event(x * logits - jax.nn.softplus(logits), event_ndim)


def gaussian_log_prob(x: jax.Array, mean: jax.Array, log_scale: jax.Array,
                      event_ndim: int) -> jax.Array:
  """log N(x | mean, exp(log_scale)^2), summed over the event dimensions.

  log p(x) = -0.5 ((x - mean) / s)^2 - log s - 0.5 log(2 pi) per dimension.
  With a fixed scale s this is -||x - mean||^2 / (2 s^2) minus the constant
  D (log s + 0.5 log 2 pi): MSE up to scale and shift, which is why the
  constant must be kept for the result to be a likelihood in nats.

  Args:
    x: `[..., *event]` values.
    mean: `[..., *event]`.
    log_scale: broadcastable to `mean`: log standard deviation.
    event_ndim: how many trailing axes form one example.

  Returns:
    `[...]` log-density per example, in nats.
  """
  z = (x - mean) * jnp.exp(-log_scale)
  return _sum_event(-0.5 * z**2 - log_scale - 0.5 * _LOG_2PI, event_ndim)


def diag_gaussian_log_prob(z: jax.Array, mean: jax.Array,
                           log_var: jax.Array) -> jax.Array:
  """log N(z | mean, diag(exp(log_var))) for `[..., Z]` inputs, shape `[...]`."""
  return gaussian_log_prob(z, mean, 0.5 * log_var, event_ndim=1)


def std_normal_log_prob(z: jax.Array) -> jax.Array:
  """log N(z | 0, I) for `[..., Z]` inputs, shape `[...]`."""
  return jnp.sum(-0.5 * z**2 - 0.5 * _LOG_2PI, axis=-1)


def kl_to_std_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
  """KL(N(mean, diag(exp(log_var))) || N(0, I)) per latent unit, `[..., Z]`.

  Closed form for one unit with variance v = exp(log_var):
    KL = 0.5 (mean^2 + v - 1 - log v).
  Kept per unit so that free bits and per-dimension diagnostics can use it;
  sum over the last axis for the per-example KL.
  """
  return 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)


def reparameterize(rng: jax.Array, mean: jax.Array, log_var: jax.Array,
                   num_samples: int | None = None) -> jax.Array:
  """z = mean + exp(log_var / 2) * eps with eps ~ N(0, I).

  Args:
    rng: a PRNG key.
    mean: `[B, Z]`.
    log_var: `[B, Z]`.
    num_samples: if given, draws `[num_samples, B, Z]`; else `[B, Z]`.
  """
  shape = mean.shape if num_samples is None else (num_samples, *mean.shape)
  eps = jax.random.normal(rng, shape, mean.dtype)
  return mean + jnp.exp(0.5 * log_var) * eps


def negative_elbo(log_likelihood: jax.Array, kl: jax.Array,
                  beta: float | jax.Array = 1.0) -> jax.Array:
  """The beta-weighted negative ELBO, `[B]`.

  -ELBO_beta = -E_q[log p(x|z)] + beta KL(q(z|x) || p(z)), with the
  expectation estimated by the sample(s) behind `log_likelihood`. With
  beta = 1 this is the bound on -log p(x); other betas give the beta-VAE
  training loss, and the unweighted -ELBO should be reported for likelihood.
  """
  return -log_likelihood + beta * kl


def bits_per_dim(nats: jax.Array, num_dims: int) -> jax.Array:
  """Converts a per-example negative log-likelihood in nats to bits/dim."""
  return nats / (num_dims * math.log(2.0))
