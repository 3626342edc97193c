"""Encoders, decoders and the VAE module.

Modules return distribution parameters in typed outputs and never read
objective settings (beta, number of samples, ...): objectives live in
`vae_jax.objectives` and call `encode` / `decode` through `Module.apply`.
"""

from collections.abc import Callable, Sequence
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import losses
from vae_jax.errors import UserError

LIKELIHOODS = ("bernoulli", "gaussian")
ACTIVATIONS = {
    "relu": nn.relu, "elu": nn.elu, "gelu": nn.gelu, "tanh": jnp.tanh,
    "softplus": nn.softplus, "swish": nn.swish,
}


@flax.struct.dataclass
class Posterior:
  """q(z|x) = N(mean, diag(exp(log_var)))."""
  mean: jax.Array  # [B, Z]
  log_var: jax.Array  # [B, Z]


@flax.struct.dataclass
class Likelihood:
  """Parameters of p(x|z) for a batch of latents.

  `name` selects the family: "bernoulli" (`loc` holds logits) or "gaussian"
  (`loc` holds the mean, `log_scale` the log standard deviation).
  """
  loc: jax.Array  # [..., *event]
  log_scale: jax.Array  # broadcastable to loc; unused for bernoulli
  name: str = flax.struct.field(pytree_node=False)
  event_ndim: int = flax.struct.field(pytree_node=False)

  def log_prob(self, x: jax.Array) -> jax.Array:
    """log p(x|z) per example in nats, `[...]`."""
    if self.name == "bernoulli":
      return losses.bernoulli_log_prob(self.loc, x, self.event_ndim)
    return losses.gaussian_log_prob(x, self.loc, self.log_scale,
                                    self.event_ndim)

  def mean(self) -> jax.Array:
    """E[x|z], `[..., *event]`: pixel probabilities or the Gaussian mean."""
    if self.name == "bernoulli":
      return jax.nn.sigmoid(self.loc)
    return self.loc


@flax.struct.dataclass
class VAEOutput:
  posterior: Posterior
  z: jax.Array  # [B, Z]
  likelihood: Likelihood


class MLPEncoder(nn.Module):
  """Flattens `[B, *event]` and returns the parameters of q(z|x)."""
  hidden: Sequence[int]
  latent_dim: int
  activation: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x: jax.Array) -> Posterior:
    h = x.reshape(x.shape[0], -1)
    for i, width in enumerate(self.hidden):
      h = self.activation(nn.Dense(width, name=f"hidden_{i}")(h))
    mean = nn.Dense(self.latent_dim, name="mean")(h)
    log_var = nn.Dense(self.latent_dim, name="log_var")(h)
    return Posterior(mean=mean, log_var=log_var)


class MLPDecoder(nn.Module):
  """Maps `[..., Z]` latents to the parameters of p(x|z) over `event_shape`."""
  hidden: Sequence[int]
  event_shape: tuple[int, ...]
  activation: Callable[[jax.Array], jax.Array]
  likelihood: str
  gaussian_scale: float

  @nn.compact
  def __call__(self, z: jax.Array) -> Likelihood:
    h = z
    for i, width in enumerate(self.hidden):
      h = self.activation(nn.Dense(width, name=f"hidden_{i}")(h))
    loc = nn.Dense(math.prod(self.event_shape), name="loc")(h)
    loc = loc.reshape(*z.shape[:-1], *self.event_shape)
    log_scale = jnp.full((), math.log(self.gaussian_scale), loc.dtype)
    return Likelihood(loc=loc, log_scale=log_scale, name=self.likelihood,
                      event_ndim=len(self.event_shape))


class VAE(nn.Module):
  """A latent-variable model with a diagonal Gaussian posterior.

  Use `__call__` for one reparameterized sample, or `encode` / `decode`
  (via `apply(..., method=...)`) when an objective needs more control.
  """
  encoder: nn.Module
  decoder: nn.Module

  def encode(self, x: jax.Array) -> Posterior:
    return self.encoder(x)

  def decode(self, z: jax.Array) -> Likelihood:
    return self.decoder(z)

  def __call__(self, x: jax.Array, rng: jax.Array) -> VAEOutput:
    posterior = self.encode(x)
    z = losses.reparameterize(rng, posterior.mean, posterior.log_var)
    return VAEOutput(posterior=posterior, z=z, likelihood=self.decode(z))


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError for a model config that cannot be built."""
  if config.name != "mlp_vae":
    raise UserError(f"Unknown model.name {config.name!r}; known: 'mlp_vae'.")
  if config.latent_dim <= 0:
    raise UserError(
        f"model.latent_dim must be a positive integer, got {config.latent_dim}.")
  if any(w <= 0 for w in config.hidden):
    raise UserError(
        f"model.hidden widths must be positive, got {tuple(config.hidden)}.")
  if config.likelihood not in LIKELIHOODS:
    raise UserError(f"Unknown model.likelihood {config.likelihood!r}; "
                    f"known: {', '.join(LIKELIHOODS)}.")
  if config.activation not in ACTIVATIONS:
    raise UserError(f"Unknown model.activation {config.activation!r}; "
                    f"known: {', '.join(ACTIVATIONS)}.")
  if config.gaussian_scale <= 0:
    raise UserError(
        f"model.gaussian_scale must be positive, got {config.gaussian_scale}.")


def create_model(config: ml_collections.ConfigDict,
                 event_shape: tuple[int, ...]) -> VAE:
  """Builds the model described by `config` (the `model` section)."""
  validate_config(config)
  activation = ACTIVATIONS[config.activation]
  hidden = tuple(config.hidden)
  encoder = MLPEncoder(hidden, config.latent_dim, activation)
  decoder = MLPDecoder(hidden[::-1], tuple(event_shape), activation,
                       config.likelihood, config.gaussian_scale)
  return VAE(encoder=encoder, decoder=decoder)
