"""Input corruptions for denoising autoencoders, on device.

Each function maps clean inputs `[B, *event]` in [0, 1] and a key to
corrupted inputs of the same shape; the objective draws them with the
step's key, so a resumed run corrupts exactly as the uninterrupted one.
"""

import jax
import jax.numpy as jnp

from vae_jax.errors import UserError

CORRUPTIONS = ("none", "gaussian", "masking", "salt_and_pepper")


def gaussian(x: jax.Array, rng: jax.Array, sigma: float | jax.Array
             ) -> jax.Array:
  """x + sigma * eps, eps ~ N(0, I), clipped back to [0, 1]."""
  return jnp.clip(x + sigma * jax.random.normal(rng, x.shape, x.dtype),
                  0.0, 1.0)


def masking(x: jax.Array, rng: jax.Array, rate: float | jax.Array
            ) -> jax.Array:
  """Each value is set to 0 with probability `rate` (masking noise)."""
  return jnp.where(jax.random.uniform(rng, x.shape) < rate, 0.0, x)


def salt_and_pepper(x: jax.Array, rng: jax.Array, rate: float | jax.Array
                    ) -> jax.Array:
  """Each value becomes 0 or 1 (equally likely) with probability `rate`."""
  rng_hit, rng_value = jax.random.split(rng)
  hit = jax.random.uniform(rng_hit, x.shape) < rate
  salt = jax.random.bernoulli(rng_value, 0.5, x.shape).astype(x.dtype)
  return jnp.where(hit, salt, x)


def corrupt(name: str, x: jax.Array, rng: jax.Array,
            level: float | jax.Array) -> jax.Array:
  """Applies the corruption `name` at `level` (sigma, or a rate)."""
  if name == "none":
    return x
  fn = {"gaussian": gaussian, "masking": masking,
        "salt_and_pepper": salt_and_pepper}[name]
  return fn(x, rng, level)


def validate(name: str, level: float) -> None:
  if name not in CORRUPTIONS:
    raise UserError(f"Unknown objective.corruption {name!r}; known: "
                    f"{', '.join(CORRUPTIONS)}.")
  if name == "gaussian" and level <= 0:
    raise UserError(f"objective.noise_level (sigma) must be > 0 for gaussian "
                    f"corruption, got {level}.")
  if name in ("masking", "salt_and_pepper") and not 0 < level < 1:
    raise UserError(f"objective.noise_level (a rate) must be in (0, 1) for "
                    f"{name} corruption, got {level}.")
