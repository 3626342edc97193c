"""Encoders, decoders and the VAE module.

Modules return distribution parameters in typed outputs and never read
objective settings (beta, number of samples, ...): objectives live in
`vae_jax.objectives` and call `encode` / `decode` through `Module.apply`.
"""

from collections.abc import Callable, Sequence
import functools
import math

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import compiler
from vae_jax import layers
from vae_jax import losses
from vae_jax.errors import UserError

LIKELIHOODS = ("auto", "bernoulli", "gaussian", "discretized_gaussian")
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

  `name` selects the family: "bernoulli" (`loc` holds logits), "gaussian"
  (`loc` holds the mean, `log_scale` the log standard deviation) or
  "discretized_gaussian" (the same parameters, over the 256 levels of 8-bit
  data, `losses.discretized_gaussian_log_prob`).
  """
  loc: jax.Array  # [..., *event]
  log_scale: jax.Array  # broadcastable to loc; unused for bernoulli
  name: str = flax.struct.field(pytree_node=False)
  event_ndim: int = flax.struct.field(pytree_node=False)

  def log_prob(self, x: jax.Array) -> jax.Array:
    """log p(x|z) per example in nats, `[...]`."""
    if self.name == "bernoulli":
      return losses.bernoulli_log_prob(self.loc, x, self.event_ndim)
    if self.name == "discretized_gaussian":
      return losses.discretized_gaussian_log_prob(
          x, self.loc, self.log_scale, self.event_ndim)
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


@flax.struct.dataclass
class AEOutput:
  code: jax.Array  # [B, Z] deterministic code
  likelihood: Likelihood


def _flatten(x: jax.Array, event_ndim: int) -> jax.Array:
  return x.reshape(*x.shape[:x.ndim - event_ndim], -1)


def dense_layers(h: jax.Array, widths: Sequence[int],
                 activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Dense layers `hidden_i` with `activation`, in the calling module."""
  for i, width in enumerate(widths):
    h = activation(nn.Dense(width, name=f"hidden_{i}")(h))
  return h


def mlp_features(x: jax.Array, *, hidden: Sequence[int],
                 activation: Callable[[jax.Array], jax.Array],
                 event_ndim: int) -> jax.Array:
  """Flattens `[B, *event]` and applies dense layers: features `[B, F]`.

  Called inside an encoder's `__call__`, so its layers (`hidden_i`) are the
  encoder's own parameters.
  """
  return dense_layers(_flatten(x, event_ndim), hidden, activation)


def conv_features(x: jax.Array, *, channels: Sequence[int],
                  hidden: Sequence[int],
                  activation: Callable[[jax.Array], jax.Array]) -> jax.Array:
  """Strided convolutions on `[B, H, W, C]`, then dense layers: `[B, F]`.

  Each conv layer (`conv_i`) has a 4x4 kernel and stride 2 ("SAME"
  padding), halving the height and width (rounding up), so any image size
  works. Called inside an encoder's `__call__`, like `mlp_features`.
  """
  h = x
  for i, c in enumerate(channels):
    h = activation(layers.Conv(c, (4, 4), strides=2, name=f"conv_{i}")(h))
  return dense_layers(h.reshape(*h.shape[:-3], -1), hidden, activation)


class GaussianEncoder(nn.Module):
  """q(z|x): features (`mlp_features` or `conv_features`) and two linear
  heads for the mean and log-variance."""
  features: Callable[[jax.Array], jax.Array]
  latent_dim: int

  @nn.compact
  def __call__(self, x: jax.Array) -> Posterior:
    h = self.features(x)
    return Posterior(mean=nn.Dense(self.latent_dim, name="mean")(h),
                     log_var=nn.Dense(self.latent_dim, name="log_var")(h))


class CodeEncoder(nn.Module):
  """A deterministic code `[B, Z]`: features, a linear head, an activation."""
  features: Callable[[jax.Array], jax.Array]
  latent_dim: int
  code_activation: Callable[[jax.Array], jax.Array]

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return self.code_activation(
        nn.Dense(self.latent_dim, name="code")(self.features(x)))


class OutputScale(nn.Module):
  """log sigma of a Gaussian likelihood: fixed, or learned with a floor.

  Learned scales are `min_scale + softplus(raw)` (a global scalar or one per
  pixel, not a function of z), initialized at `scale`: the floor keeps
  log p(x|z) bounded when the decoder fits some pixels exactly, which would
  otherwise drive sigma to 0 and the likelihood to infinity.
  """
  event_shape: tuple[int, ...]
  scale: float
  learn: str  # none | global | per_pixel
  min_scale: float

  @nn.compact
  def __call__(self) -> jax.Array:
    if self.learn == "none":
      return jnp.full((), math.log(self.scale), jnp.float32)
    shape = () if self.learn == "global" else self.event_shape
    # softplus^-1(scale - min_scale), so training starts at `scale`.
    init = math.log(math.expm1(self.scale - self.min_scale))
    raw = self.param("raw_scale", nn.initializers.constant(init), shape)
    return jnp.log(self.min_scale + jax.nn.softplus(raw))


class MLPDecoder(nn.Module):
  """Maps `[..., Z]` latents to the parameters of p(x|z) over `event_shape`."""
  hidden: Sequence[int]
  event_shape: tuple[int, ...]
  activation: Callable[[jax.Array], jax.Array]
  likelihood: str
  output_scale: OutputScale

  @nn.compact
  def __call__(self, z: jax.Array) -> Likelihood:
    h = dense_layers(z, self.hidden, self.activation)
    loc = nn.Dense(math.prod(self.event_shape), name="loc")(h)
    loc = loc.reshape(*z.shape[:-1], *self.event_shape)
    return Likelihood(loc=loc, log_scale=self.output_scale(),
                      name=self.likelihood, event_ndim=len(self.event_shape))


class ConvDecoder(nn.Module):
  """Mirror of `conv_features`: dense layers, then x2 learned upsamplings.

  The latent is mapped to a `[h, w, channels[-1]]` map with
  `h = ceil(H / 2^n)` for n conv layers; each `Upsample` doubles it and the
  result is cropped to `[H, W]`, so the output has the data's shape.
  """
  channels: Sequence[int]  # The encoder's, in encoder order.
  hidden: Sequence[int]  # Dense widths, in decoder order.
  event_shape: tuple[int, ...]
  activation: Callable[[jax.Array], jax.Array]
  likelihood: str
  output_scale: OutputScale

  @nn.compact
  def __call__(self, z: jax.Array) -> Likelihood:
    height, width, out_channels = self.event_shape
    n = len(self.channels)
    h0, w0 = -(-height // 2**n), -(-width // 2**n)
    batch = z.shape[:-1]  # Leading axes stay: no reshape merges them.
    h = dense_layers(z, self.hidden, self.activation)
    h = self.activation(nn.Dense(h0 * w0 * self.channels[-1],
                                 name="project")(h))
    h = h.reshape(*batch, h0, w0, self.channels[-1])
    for i, c in enumerate(reversed(self.channels[:-1])):
      h = self.activation(layers.Upsample(c, name=f"upsample_{i}")(h))
    loc = layers.Upsample(out_channels, name="loc")(h)
    loc = loc[..., :height, :width, :]
    return Likelihood(loc=loc, log_scale=self.output_scale(),
                      name=self.likelihood, event_ndim=len(self.event_shape))


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

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """E[x|z] at the posterior mean, `[B, *event]`."""
    return self.decode(self.encode(x).mean).mean()

  def sample_prior(self, rng: jax.Array, n: int) -> jax.Array:
    """n latents from the prior p(z) = N(0, I), `[n, Z]`.

    Call as `model.apply(params, rng, n, method="sample_prior")` with `n`
    static; decode them for samples of x.
    """
    return jax.random.normal(rng, (n, self.encoder.latent_dim))


class Autoencoder(nn.Module):
  """A deterministic encoder and a decoder that gives p(x|code).

  The decoder's likelihood turns the reconstruction loss into nats:
  Bernoulli cross-entropy, or a Gaussian whose fixed-variance case is the
  squared error up to constants (see `losses.gaussian_log_prob`).
  """
  encoder: nn.Module
  decoder: nn.Module

  def encode(self, x: jax.Array) -> jax.Array:
    return self.encoder(x)

  def decode(self, code: jax.Array) -> Likelihood:
    return self.decoder(code)

  def __call__(self, x: jax.Array) -> AEOutput:
    code = self.encode(x)
    return AEOutput(code=code, likelihood=self.decode(code))

  def reconstruct(self, x: jax.Array) -> jax.Array:
    """E[x|code], `[B, *event]`."""
    return self.decode(self.encode(x)).mean()


MODELS = ("mlp_vae", "conv_vae", "mlp_ae", "conv_ae")
CODE_ACTIVATIONS = {"none": lambda x: x, "sigmoid": jax.nn.sigmoid,
                    "relu": jax.nn.relu}
LEARN_SCALE = ("none", "global", "per_pixel")


def is_vae(config: ml_collections.ConfigDict) -> bool:
  """Whether the `model` section describes a VAE (else an autoencoder)."""
  return config.name.endswith("_vae")


def is_convolutional(config: ml_collections.ConfigDict) -> bool:
  """Whether the `model` section describes a convolutional model."""
  return config.name.startswith("conv")


def resolve_likelihood(config: ml_collections.ConfigDict,
                       event_shape: tuple[int, ...] | None
                       ) -> tuple[str, str]:
  """(likelihood, learn_scale) that a model on `event_shape` uses.

  `model.likelihood="auto"` is "bernoulli" for images `[H, W, C]` and, for
  tables (vectors `[D]`), "gaussian" with a learned per-feature std
  (`learn_scale` "per_pixel" unless set). With `event_shape` None (no data
  yet), "auto" stays "auto".
  """
  if config.likelihood != "auto" or event_shape is None:
    return config.likelihood, config.learn_scale
  if len(event_shape) == 1:
    return "gaussian", ("per_pixel" if config.learn_scale == "none"
                        else config.learn_scale)
  return "bernoulli", config.learn_scale


def validate_config(config: ml_collections.ConfigDict,
                    event_shape: tuple[int, ...] | None = None) -> None:
  """Raises UserError for a model config that cannot be built."""
  channels = config.conv_channels
  code_activation = config.code_activation
  learn_scale = config.learn_scale
  min_scale = config.min_scale
  if config.name not in MODELS:
    raise UserError(f"Unknown model.name {config.name!r}; "
                    f"known: {', '.join(MODELS)}.")
  if config.latent_dim <= 0:
    raise UserError(
        f"model.latent_dim must be a positive integer, got {config.latent_dim}.")
  if any(w <= 0 for w in config.hidden):
    raise UserError(
        f"model.hidden widths must be positive, got {tuple(config.hidden)}.")
  if config.name.startswith("conv"):
    if not channels or any(c <= 0 for c in channels):
      raise UserError("model.conv_channels must be positive channel counts, "
                      f"got {tuple(channels)}.")
    if event_shape is not None and len(event_shape) != 3:
      raise UserError(f"model.name={config.name!r} needs images [H, W, C]; "
                      f"this dataset's examples are {tuple(event_shape)}.")
  if config.likelihood not in LIKELIHOODS:
    raise UserError(f"Unknown model.likelihood {config.likelihood!r}; "
                    f"known: {', '.join(LIKELIHOODS)}.")
  if config.activation not in ACTIVATIONS:
    raise UserError(f"Unknown model.activation {config.activation!r}; "
                    f"known: {', '.join(ACTIVATIONS)}.")
  if code_activation not in CODE_ACTIVATIONS:
    raise UserError(f"Unknown model.code_activation {code_activation!r}; "
                    f"known: {', '.join(CODE_ACTIVATIONS)}.")
  if is_vae(config) and code_activation != "none":
    raise UserError("model.code_activation applies to autoencoders; a VAE's "
                    "latent is Gaussian: leave it at 'none'.")
  if learn_scale not in LEARN_SCALE:
    raise UserError(f"Unknown model.learn_scale {learn_scale!r}; "
                    f"known: {', '.join(LEARN_SCALE)}.")
  likelihood, learn_scale = resolve_likelihood(config, event_shape)
  if likelihood == "bernoulli" and learn_scale != "none":
    raise UserError("model.learn_scale needs model.likelihood='gaussian'; a "
                    "Bernoulli likelihood has no scale.")
  if config.gaussian_scale <= 0:
    raise UserError(
        f"model.gaussian_scale must be positive, got {config.gaussian_scale}.")
  if learn_scale != "none" and not 0 < min_scale < config.gaussian_scale:
    raise UserError(
        "A learned scale needs 0 < model.min_scale < model.gaussian_scale (its "
        f"initial value); got {min_scale} and {config.gaussian_scale}.")


def create_model(config: ml_collections.ConfigDict,
                 event_shape: tuple[int, ...]) -> VAE | Autoencoder:
  """Builds the model described by `config` (the `model` section)."""
  validate_config(config, event_shape)
  channels = config.conv_channels
  code_activation = config.code_activation
  likelihood, learn_scale = resolve_likelihood(config, event_shape)
  min_scale = config.min_scale
  event_shape = tuple(event_shape)
  activation = ACTIVATIONS[config.activation]
  hidden = tuple(config.hidden)
  output_scale = OutputScale(event_shape, config.gaussian_scale, learn_scale,
                             min_scale)
  if config.name.startswith("conv"):
    features = functools.partial(conv_features, channels=tuple(channels),
                                 hidden=hidden, activation=activation)
    decoder = ConvDecoder(tuple(channels), hidden[::-1], event_shape,
                          activation, likelihood, output_scale)
  else:
    features = functools.partial(mlp_features, hidden=hidden,
                                 activation=activation,
                                 event_ndim=len(event_shape))
    decoder = MLPDecoder(hidden[::-1], event_shape, activation,
                         likelihood, output_scale)
  if is_vae(config):
    return VAE(encoder=GaussianEncoder(features, config.latent_dim),
               decoder=decoder)
  return Autoencoder(
      encoder=CodeEncoder(features, config.latent_dim,
                          CODE_ACTIVATIONS[code_activation]),
      decoder=decoder)


def init_params(model: VAE | Autoencoder, rng: jax.Array,
                event_shape: tuple[int, ...]):
  """Initial parameters of `model` for examples of `event_shape`.

  Called on a concrete key, one compiled program: run op by op, the
  initializers and the forward pass on a zero batch compiled a program per
  operation and kernel shape (the conv VAE's parameters 14.4 s, compiled
  whole 2.0 s, the same bits; 2026-12-01, 2-core CPU). Called in a traced
  function (`rng` a tracer), it is part of the caller's program.
  """
  if isinstance(rng, jax.core.Tracer):
    return _init_params(model, rng, event_shape)
  return _init_program()(model, rng, event_shape)


@functools.cache
def _init_program():
  # Built on first use: compiler.jit asks for the backend, which must not
  # start at import (multi-process runs initialize JAX's distributed
  # runtime first).
  return compiler.jit(_init_params, static_argnums=(0, 2),
                      tree_reductions=True)


def _init_params(model, rng, event_shape):
  x = jnp.zeros((1, *event_shape), jnp.float32)
  if isinstance(model, VAE):
    return model.init(rng, x, jax.random.key(0))
  return model.init(rng, x)
