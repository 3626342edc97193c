"""The discrete distributions BB-ANS codes with (`vae_jax.bbans`).

Latents: each unit's N(0, 1) prior cut into K = 2^latent_bits buckets of
equal mass (Townsend et al. 2019, section 2.5.1), the posterior's mass on
each bucket as integer counts summing to 2^precision; pixel levels: any
probabilities quantized the same way. Integer counts make the coder's
probabilities exact and identical on the encoding and decoding sides.
"""

import jax
import jax.numpy as jnp
import jax.scipy.special  # pylint: disable=unused-import
import numpy as np


def _ndtri(p: np.ndarray) -> np.ndarray:
  """scipy's Phi^-1, imported on first use (scipy.special costs ~0.2 s)."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  return special.ndtri(p)


def bucket_edges(latent_bits: int) -> np.ndarray:
  """e_i = Phi^-1(i / K), i = 0..K, K = 2^latent_bits: `[K + 1]` float64
  with e_0 = -inf and e_K = inf (buckets of prior mass 1/K each)."""
  k = 2**latent_bits
  return _ndtri(np.arange(k + 1) / k)


def bucket_centres(latent_bits: int) -> np.ndarray:
  """The median of each bucket under the prior, Phi^-1((i + 1/2) / K), `[K]`
  float32: the latent value the decoder sees for bucket i."""
  k = 2**latent_bits
  return _ndtri((np.arange(k) + 0.5) / k).astype(np.float32)


def posterior_counts(mean: jax.Array, log_var: jax.Array, latent_bits: int,
                     precision: int) -> jax.Array:
  """q(bucket | x) per latent unit as integer counts summing to 2^precision.

  The mass of N(mean, exp(log_var)) on bucket i is
  Phi((e_{i+1} - mean) / sigma) - Phi((e_i - mean) / sigma), computed from
  the smaller tail beyond each edge (no cancellation far from the mean).
  Counts are floor(mass (2^precision - K)) + 1, so every bucket is codable,
  and the remainder goes to the likeliest bucket. Jitted with the encoder,
  it runs on the same `[block, Z]` shapes when encoding and decoding, so
  both get the same counts.

  Args:
    mean: `[..., Z]` posterior means.
    log_var: `[..., Z]` posterior log-variances.
    latent_bits: K = 2^latent_bits buckets (static).
    precision: log2 of each unit's total (static).

  Returns:
    `[..., Z, K]` int32, summing to 2^precision over the last axis.
  """
  edges = jnp.asarray(bucket_edges(latent_bits), jnp.float32)
  t = (edges - mean[..., None]) * jnp.exp(-0.5 * log_var)[..., None]
  tail = jax.scipy.special.ndtr(-jnp.abs(t))  # [..., Z, K + 1]
  lo, hi = tail[..., :-1], tail[..., 1:]
  mass = jnp.where(t[..., :-1] >= 0, lo - hi,  # Right of the mean.
                   jnp.where(t[..., 1:] < 0, hi - lo,  # Left of it.
                             1.0 - lo - hi))  # The bucket holding the mean.
  return quantize(mass, precision)


def quantize(mass: jax.Array, precision: int) -> jax.Array:
  """Probabilities `[..., K]` as int32 counts summing to 2^precision.

  floor(mass (2^precision - K)) + 1 (after normalizing), so every symbol
  is codable; the remainder goes to the likeliest symbol.
  """
  k = mass.shape[-1]
  mass = jnp.maximum(mass, 0.0)
  mass = mass / jnp.sum(mass, axis=-1, keepdims=True)
  counts = jnp.floor(mass * (2**precision - k)).astype(jnp.int32) + 1
  remainder = 2**precision - jnp.sum(counts, axis=-1, keepdims=True)
  top = jax.nn.one_hot(jnp.argmax(mass, axis=-1), k, dtype=jnp.int32)
  return counts + top * remainder


def draw_cost(counts: jax.Array, precision: int
              ) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of -log2 q(z|x), in bits, of a draw from counts.

  Args:
    counts: `[B, Z, K]` from `posterior_counts` (independent units).
    precision: their total, 2^precision.

  Returns:
    `[B]` mean (q's entropy in bits) and `[B]` variance, summed over units.
  """
  p = counts.astype(jnp.float32) / 2**precision
  bits = -jnp.log2(p)
  mean = jnp.sum(p * bits, axis=-1)
  var = jnp.maximum(jnp.sum(p * bits**2, axis=-1) - mean**2, 0.0)
  return jnp.sum(mean, axis=-1), jnp.sum(var, axis=-1)
