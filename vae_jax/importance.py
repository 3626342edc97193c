r"""The importance-sampled log-likelihood of a VAE, and latent diagnostics.

The estimate of log p(x) is the importance-sampled one of Burda et al.
(2015), with q(z|x) as the proposal:

  log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

a stochastic lower bound (the IWAE bound) that tightens as K grows; K = 5000
is the literature protocol for MNIST. `vae_jax.evaluators.nll` runs it on a
run's test set.

Memory does not grow with K: the K samples are drawn and scored in chunks of
`chunk_size` by `lax.scan`, keeping a running log-sum-exp (running maximum
and a sum rescaled to it), so a batch needs O(chunk_size * batch) decoder
activations whatever K is.

Randomness. Sample j of example n uses the key
`fold_in(fold_in(rng, n), j)`, with n the example's index in the evaluated
set. Every latent sample is therefore fixed by (rng, n, j) alone: the
estimate is exactly the same (to float rounding, since only the order of the
additions changes) for any chunk size, batch size or padding, which the
tests check. The price is one extra Threefry hash per (example, sample)
pair: on a 2-core CPU, drawing a chunk of 100 x 500 x 50 normals this way
takes 37 ms against 25 ms for one block from one key, next to about 0.5 s
for decoding that chunk with the 784-200-200-50 MLP, so about 2% of the
evaluation. One block per chunk from `fold_in(rng, chunk)` would make the
estimate depend on the chunk size, equal only in distribution.
"""

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import input_pipeline
from vae_jax import losses
from vae_jax import models
from vae_jax import objectives
from vae_jax.errors import UserError

# A unit is active when Cov_x(E_q[z_d | x]) exceeds this (Burda et al., 2015).
ACTIVE_UNIT_THRESHOLD = 0.01


def _example_keys(rng: jax.Array, example_ids: jax.Array) -> jax.Array:
  """`[B]` keys, one per example: fold_in(rng, n)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, example_ids)


def _draw_eps(example_keys: jax.Array, sample_ids: jax.Array, latent_dim: int,
              dtype) -> jax.Array:
  """`[C, B, Z]` standard normals; [j, n] from fold_in(example_keys[n], j)."""

  def one(key, j):
    return jax.random.normal(jax.random.fold_in(key, j), (latent_dim,), dtype)

  return jax.vmap(lambda j: jax.vmap(lambda k: one(k, j))(example_keys))(
      sample_ids)


def _init_carry(batch_size: int, dtype) -> dict[str, jax.Array]:
  return {"max": jnp.full((batch_size,), -jnp.inf, dtype),
          "sum": jnp.zeros((batch_size,), dtype),
          "sum_log_w": jnp.zeros((batch_size,), dtype)}


def _chunk_update(model: models.VAE, params: Any, x: jax.Array,
                  posterior: models.Posterior, example_keys: jax.Array,
                  carry: dict[str, jax.Array], chunk_index: jax.Array, *,
                  num_samples: int, chunk_size: int) -> dict[str, jax.Array]:
  """Adds samples [i C, (i + 1) C) to the running log-sum-exp of the weights.

  The carry holds per example m = max_j log w_j so far, s = sum_j
  exp(log w_j - m) and sum_j log w_j. Samples with index >= K (the tail of
  the last chunk when C does not divide K) get log w = -inf and count for
  nothing.
  """
  sample_ids = chunk_index * chunk_size + jnp.arange(chunk_size)
  valid = (sample_ids < num_samples)[:, None]  # [C, 1]
  eps = _draw_eps(example_keys, sample_ids, posterior.mean.shape[-1],
                  posterior.mean.dtype)
  z = posterior.mean + jnp.exp(0.5 * posterior.log_var) * eps  # [C, B, Z]
  log_w = objectives.importance_terms(model, params, x, posterior,
                                      z).log_weights  # [C, B]
  log_w = jnp.where(valid, log_w, -jnp.inf)
  new_max = jnp.maximum(carry["max"], jnp.max(log_w, axis=0))
  # Guards exp(-inf - -inf) should every weight so far be zero.
  shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
  total = (carry["sum"] * jnp.exp(carry["max"] - shift)
           + jnp.sum(jnp.exp(log_w - shift), axis=0))
  return {"max": new_max, "sum": total,
          "sum_log_w": carry["sum_log_w"]
                       + jnp.sum(jnp.where(valid, log_w, 0.0), axis=0)}


def _importance_scan(model: models.VAE, params: Any, x: jax.Array,
                     posterior: models.Posterior, example_keys: jax.Array, *,
                     num_samples: int,
                     chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """(log (1/K) sum_k w_k, (1/K) sum_k log w_k), each `[B]`."""
  _check_sizes(num_samples, chunk_size)
  chunk_size = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk_size)
  body = functools.partial(_chunk_update, model, params, x, posterior,
                           example_keys, num_samples=num_samples,
                           chunk_size=chunk_size)
  carry, _ = jax.lax.scan(lambda c, i: (body(c, i), None),
                          _init_carry(x.shape[0], posterior.mean.dtype),
                          jnp.arange(num_chunks))
  log_px = carry["max"] + jnp.log(carry["sum"]) - math.log(num_samples)
  return log_px, carry["sum_log_w"] / num_samples


def _check_sizes(num_samples: int, chunk_size: int) -> None:
  if num_samples < 1:
    raise UserError(f"The number of importance samples must be >= 1, got "
                    f"{num_samples}.")
  if chunk_size < 1:
    raise UserError(f"The importance chunk size must be >= 1, got "
                    f"{chunk_size}.")


def importance_sampled_log_likelihood(
    model: models.VAE, params: Any, x: jax.Array, rng: jax.Array,
    num_samples: int, chunk_size: int,
    example_ids: jax.Array | None = None) -> jax.Array:
  """Importance-sampled estimate of log p(x) with q(z|x) as proposal.

  log p(x) ~= logsumexp_k(log w_k) - log K, the K-sample IWAE bound, computed
  in chunks of `chunk_size` samples with a running log-sum-exp so memory is
  O(chunk_size * B) for any K. Sample j of example n is drawn from
  `fold_in(fold_in(rng, example_ids[n]), j)`, so the result does not depend
  on `chunk_size` (up to float rounding) nor on how examples are batched.

  Args:
    model: a VAE.
    params: its parameters.
    x: `[B, *event]` model inputs.
    rng: a PRNG key.
    num_samples: K >= 1, static.
    chunk_size: samples scored at once, static; `min(chunk_size, K)` is used,
      and a chunk size dividing K wastes no compute on the last chunk.
    example_ids: `[B]` int, the examples' indices in the evaluated set;
      default `arange(B)`.

  Returns:
    `[B]` estimates of log p(x) in nats (biased low, by less as K grows).
  """
  if example_ids is None:
    example_ids = jnp.arange(x.shape[0])
  posterior = model.apply(params, x, method="encode")
  log_px, _ = _importance_scan(model, params, x, posterior,
                               _example_keys(rng, example_ids),
                               num_samples=num_samples, chunk_size=chunk_size)
  return log_px


def evaluate_batch(model: models.VAE, params: Any, images: jax.Array,
                   mask: jax.Array, rng: jax.Array, first_index: jax.Array, *,
                   num_samples: int, chunk_size: int) -> dict[str, jax.Array]:
  """Per-example likelihood terms and latent sums for one padded batch.

  Args:
    model: a VAE.
    params: its parameters.
    images: `[EB, *event]` uint8, already binarized if the run is.
    mask: `[EB]`, 1 for real examples and 0 for padding.
    rng: the importance-sampling key (the same for every batch).
    first_index: `[]` int, the index of `images[0]` in the evaluated set.
    num_samples: K, static.
    chunk_size: static, see `importance_sampled_log_likelihood`.

  Returns:
    Per-example `[EB]` arrays, zero at padding: `log_px` (IS estimate) and
    `nelbo_k` (-(1/K) sum_k log w_k: the -ELBO from the same K samples, with
    a Monte Carlo KL). Masked sums over the batch, `[Z]`: `kl_per_dim`
    (closed form), `mean` and `mean_sq` (of the posterior means, for active
    units).
  """
  x = input_pipeline.preprocess(images, None, "none")
  example_keys = _example_keys(rng, first_index + jnp.arange(x.shape[0]))
  posterior = model.apply(params, x, method="encode")
  log_px, mean_log_w = _importance_scan(
      model, params, x, posterior, example_keys, num_samples=num_samples,
      chunk_size=chunk_size)
  kl_per_dim = losses.kl_to_std_normal(posterior.mean, posterior.log_var)
  keep = mask > 0
  # where, not a product: padding must not turn a NaN or inf into the sums.
  out = {"log_px": jnp.where(keep, log_px, 0.0),
         "nelbo_k": jnp.where(keep, -mean_log_w, 0.0)}
  weights = keep[:, None]
  out["kl_per_dim"] = jnp.sum(jnp.where(weights, kl_per_dim, 0.0), axis=0)
  out["mean"] = jnp.sum(jnp.where(weights, posterior.mean, 0.0), axis=0)
  out["mean_sq"] = jnp.sum(
      jnp.where(weights, jnp.square(posterior.mean), 0.0), axis=0)
  return out


def summarize(outputs: dict[str, Any], mask: Any) -> dict[str, Any]:
  """Test-set metrics from stacked `evaluate_batch` outputs, in float64.

  Args:
    outputs: per-example arrays `[NB, EB]` and per-batch sums `[NB, Z]`.
    mask: `[NB, EB]`, 1 for real examples.

  Returns:
    Means over the N real examples and standard errors (sample std over
    examples / sqrt(N): the spread of the test set, which dominates the
    Monte Carlo error of the estimator): `nll` = -log p(x) (nats),
    `nelbo_k` (-ELBO from the K samples), `elbo_gap` = nelbo_k - nll (>= 0
    in expectation; estimates KL(q(z|x) || p(z|x)) less the remaining IWAE
    bias), and the latent diagnostics: `kl_per_dim`,
    `posterior_mean_variance` (Cov_x(E_q[z_d|x])) and `active_units`.
  """
  keep = np.asarray(mask) > 0
  n = int(keep.sum())

  def per_example(name):
    return np.asarray(outputs[name], np.float64)[keep]

  def total(name):
    return np.sum(np.asarray(outputs[name], np.float64), axis=0)

  def stderr(v):
    return float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0

  nll, nelbo_k = -per_example("log_px"), per_example("nelbo_k")
  m = {"nll": float(nll.mean()), "nll_stderr": stderr(nll),
       "nelbo_k": float(nelbo_k.mean()), "nelbo_k_stderr": stderr(nelbo_k)}
  m["elbo_gap"] = m["nelbo_k"] - m["nll"]
  mean = total("mean") / n
  variance = np.maximum(total("mean_sq") / n - np.square(mean), 0.0)
  m["active_units"] = int(np.sum(variance > ACTIVE_UNIT_THRESHOLD))
  m["kl_per_dim"] = (total("kl_per_dim") / n).tolist()
  m["posterior_mean_variance"] = variance.tolist()
  return m
