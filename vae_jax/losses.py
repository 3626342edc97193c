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
import jax.scipy.special  # pylint: disable=unused-import

_LOG_2PI = math.log(2.0 * math.pi)


def _flat_event(event_ndim: int, *arrays: jax.Array) -> list[jax.Array]:
  """Broadcasts `arrays` together and flattens the event: `[..., D]` each.

  Elementwise terms computed on the flat event vectorize on XLA:CPU. Over
  `[K, B, 28, 28, 1]` (a vmapped group of models, or a chunk of importance
  samples) their loops end in the size-1 channel axis and run scalar: the
  Bernoulli term of a group of 8 took 1.9x as long per element as one
  model's, and the IS-NLL evaluator 41.6 s instead of 34.4 s for k = 5000
  on 500 test images (experiments/benchmark_sweep.py's breakdown of the
  step; experiments/benchmark_nll.py --num_examples=500). The terms and the
  elements summed are unchanged: the same values, to float rounding (equal
  bit for bit in our checks of the Bernoulli term; 2e-7 relative for a
  Gaussian with a per-pixel scale).
  """
  arrays = jnp.broadcast_arrays(*arrays)
  return [a.reshape(a.shape[:a.ndim - event_ndim] + (-1,)) for a in arrays]


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
  """log(1 + e^x) elementwise: `jax.nn.softplus`, computed faster.

  max(x, 0) + log1p(e^-|x|): the expression `jax.nn.softplus` (through
  `jnp.logaddexp(x, 0)`) evaluates, with the same values for every input
  (inf and NaN included), but without logaddexp's NaN select, which makes
  XLA:CPU take 2.5x longer over an array (experiments/benchmark_nll.py: the
  Bernoulli likelihood of the IS-NLL evaluator). The derivative is the
  sigmoid, as for `jax.nn.softplus`.
  """
  return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return softplus(x), jax.nn.sigmoid(x) * t


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
  logits, x = _flat_event(event_ndim, logits, x)
  return jnp.sum(x * logits - softplus(logits), axis=-1)


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
  x, mean, log_scale = _flat_event(event_ndim, x, mean, log_scale)
  z = (x - mean) * jnp.exp(-log_scale)
  return jnp.sum(-0.5 * z**2 - log_scale - 0.5 * _LOG_2PI, axis=-1)


def discretized_gaussian_log_prob(x: jax.Array, mean: jax.Array,
                                  log_scale: jax.Array, event_ndim: int,
                                  num_bins: int = 256) -> jax.Array:
  """log P(x | mean, s) of a Gaussian discretized to `num_bins` levels.

  For 8-bit images x = k / 255, k in 0..255: bin k is
  [x - h, x + h] with h = 1 / (2 (num_bins - 1)), the first and last bins
  reach to -inf and +inf (the tails go to the extreme values), so the
  probabilities of the num_bins values sum to 1 (as the discretized
  logistic of PixelCNN++, Salimans et al. 2017, eq. 2, with a Gaussian):
    P(k) = Phi((x + h - mean) / s) - Phi((x - h - mean) / s).
  Each difference is taken in the tail that keeps it accurate; where it
  underflows (< 1e-12, far from the mean) the density times the bin width
  is used. A likelihood of discrete data: -log P in bits per pixel is the
  bits/dim that 8-bit likelihoods are reported in.

  Args:
    x: `[..., *event]` values k / (num_bins - 1) in [0, 1].
    mean: `[..., *event]`, on the same [0, 1] scale.
    log_scale: broadcastable to `mean`: log s.
    event_ndim: how many trailing axes form one example.
    num_bins: the number of levels (256 for 8-bit data).

  Returns:
    `[...]` log-probability per example, in nats.
  """
  x, mean, log_scale = _flat_event(event_ndim, x, mean, log_scale)
  half = 0.5 / (num_bins - 1)
  inv_s = jnp.exp(-log_scale)
  centered = x - mean
  t_hi = jnp.where(x > 1.0 - half, jnp.inf, (centered + half) * inv_s)
  t_lo = jnp.where(x < half, -jnp.inf, (centered - half) * inv_s)
  ndtr = jax.scipy.special.ndtr
  mass = jnp.where(
      t_lo >= 0, ndtr(-t_lo) - ndtr(-t_hi),  # Right of the mean.
      jnp.where(t_hi <= 0, ndtr(t_hi) - ndtr(t_lo),  # Left of it.
                1.0 - ndtr(t_lo) - ndtr(-t_hi)))  # The bin holding it.
  t_mid = centered * inv_s
  approx = -0.5 * t_mid**2 - 0.5 * _LOG_2PI + jnp.log(2 * half * inv_s)
  log_p = jnp.where(mass > 1e-12, jnp.log(jnp.maximum(mass, 1e-12)), approx)
  return jnp.sum(log_p, axis=-1)


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
  sum over the last axis for the per-example KL. v / 2 is computed as
  exp(log_var - log 2): finite for every log_var whose KL fits in float32
  (exp(log_var) alone overflows from log_var = 88.73, the KL only from
  89.42).
  """
  return (0.5 * (jnp.square(mean) - 1.0 - log_var)
          + jnp.exp(log_var - jnp.log(2.0).astype(log_var.dtype)))


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


def free_bits_kl(kl_per_unit: jax.Array, floor: float | jax.Array
                 ) -> jax.Array:
  """The KL term with a floor of `floor` nats per latent unit, `[B]`.

  Free bits (Kingma et al., 2016): the objective uses, for each latent
  unit d, max(floor, KL_d) with KL_d the batch mean of that unit's KL. A
  unit whose batch-mean KL is under the floor costs `floor` nats and gets
  no gradient pushing it further towards the prior, which counters
  posterior collapse. Per example, unit d contributes KL_bd when its batch
  mean is above the floor and `floor` otherwise, so the batch mean of the
  result is exactly sum_d max(floor, KL_d) and its gradient that of the
  units above the floor.

  Args:
    kl_per_unit: `[B, Z]` KL of each unit (`kl_to_std_normal`).
    floor: nats per unit; 0 gives the plain KL.

  Returns:
    `[B]` the KL term to weight by beta.
  """
  above = jnp.mean(kl_per_unit, axis=0) > floor
  return jnp.sum(jnp.where(above, kl_per_unit, floor), axis=-1)


def kl_warmup_weight(beta: float | jax.Array, step: jax.Array,
                     warmup_steps: int) -> jax.Array:
  """beta * min(1, step / warmup_steps): the KL weight ramps 0 -> beta."""
  if warmup_steps <= 0:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def squared_error(x: jax.Array, y: jax.Array, event_ndim: int) -> jax.Array:
  """Mean squared error per example over the event dimensions, `[...]`."""
  return jnp.mean(jnp.square(x - y),
                  axis=tuple(range(x.ndim - event_ndim, x.ndim)))


def psnr(mse: jax.Array, max_value: float = 1.0) -> jax.Array:
  """Peak signal-to-noise ratio in dB, 10 log10(max^2 / MSE), per example.

  The MSE is floored at 1e-10 (100 dB for max 1), so an exact
  reconstruction gives a finite number that averages.
  """
  return 10.0 * jnp.log10(max_value**2 / jnp.maximum(mse, 1e-10))


def l1_penalty(code: jax.Array) -> jax.Array:
  """sum_j |h_j| over the code units, `[B]` for a `[B, Z]` code."""
  return jnp.sum(jnp.abs(code), axis=-1)


def bernoulli_kl(rho: float | jax.Array, rho_hat: jax.Array) -> jax.Array:
  """KL(Bernoulli(rho) || Bernoulli(rho_hat)) elementwise, in nats.

  rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)); the
  sparsity penalty of sparse autoencoders (Ng, 2011) with rho the target
  mean activation of a sigmoid unit and rho_hat its measured mean. rho_hat
  is squeezed affinely from [0, 1] into [1e-6, 1 - 1e-6]: saturated units
  give a finite penalty and, unlike with a clip alone, still a gradient that
  pulls them back. Values outside [0, 1] (codes that are not sigmoid
  outputs, whose penalty is weighted by 0) are clipped so it stays finite.
  """
  eps = 1e-6
  rho_hat = jnp.clip(eps + (1.0 - 2.0 * eps) * rho_hat, eps, 1.0 - eps)
  return (rho * jnp.log(rho / rho_hat)
          + (1.0 - rho) * jnp.log((1.0 - rho) / (1.0 - rho_hat)))


def sparsity_penalty(code: jax.Array, rho: float | jax.Array) -> jax.Array:
  """sum_j KL(rho || rho_hat_j), rho_hat_j the batch mean of unit j, `[B]`.

  A batch-level term: every example carries the same value, so the batch
  mean of the result is the penalty and its gradient reaches each example
  through rho_hat. `code` is `[B, Z]` with activations in (0, 1).
  """
  penalty = jnp.sum(bernoulli_kl(rho, jnp.mean(code, axis=0)))
  return jnp.broadcast_to(penalty, code.shape[:1])
