"""Training objectives: a model plus loss terms, per example.

An objective is a pure function

    objective(params, x, rng, hparams) -> (loss, metrics)

with `x` a `[B, *event]` batch of model inputs, `loss` shaped `[B]` and
`metrics` a dict of `[B]` arrays in nats. `hparams` holds the scalar
hyperparameters that may differ between models trained together in one
vmapped group (beta, ...); everything that changes shapes or code paths is
fixed when the objective is created (`objective.num_samples`, ...).

The importance weights of a diagonal Gaussian posterior live here too
(`importance_terms`, `log_importance_weights`, `iwae_bound`): the IWAE
objective trains on them and `vae_jax.evaluate` scores log p(x) with them, so
both compute exactly the same per-example quantity.
"""

from collections.abc import Callable
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import losses
from vae_jax import models
from vae_jax.errors import UserError

Objective = Callable[[Any, jax.Array, jax.Array, dict[str, jax.Array]],
                     tuple[jax.Array, dict[str, jax.Array]]]
OBJECTIVES = ("elbo", "iwae")


def num_samples_of(config: ml_collections.ConfigDict) -> int:
  """Latent samples per example; configs without the field use one."""
  return config.get("num_samples", 1)


def validate_config(config: ml_collections.ConfigDict) -> None:
  if config.name not in OBJECTIVES:
    raise UserError(f"Unknown objective.name {config.name!r}; "
                    f"known: {', '.join(OBJECTIVES)}.")
  if config.beta < 0:
    raise UserError(f"objective.beta must be >= 0, got {config.beta}.")
  k = num_samples_of(config)
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise UserError(
        f"objective.num_samples must be an integer >= 1, got {k!r}.")
  if config.name == "iwae" and config.beta != 1.0:
    # The IWAE bound has no KL term to weight: refuse rather than ignore it.
    raise UserError(f"objective.beta={config.beta} has no meaning for the "
                    "iwae objective; leave it at 1.0 (use elbo for a "
                    "beta-VAE).")


def hparams(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The objective's per-model scalar hyperparameters."""
  return {"beta": float(config.beta)}


def metric_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The keys of the metrics dict the objective returns."""
  del config  # Every objective so far reports the same terms.
  return ("loss", "recon", "kl", "nelbo")


# ----------------------------------------------------------------------------
# Importance weights, shared with `vae_jax.evaluate`.


@flax.struct.dataclass
class ImportanceTerms:
  """The parts of log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x)."""
  log_likelihood: jax.Array  # [K, B] log p(x|z_k)
  log_prior: jax.Array  # [K, B] log N(z_k | 0, I)
  log_posterior: jax.Array  # [K, B] log q(z_k|x)

  @property
  def log_weights(self) -> jax.Array:  # [K, B]
    return self.log_likelihood + self.log_prior - self.log_posterior


def importance_terms(model: models.VAE, params: Any, x: jax.Array,
                     posterior: models.Posterior,
                     z: jax.Array) -> ImportanceTerms:
  """Scores given latent samples under p(x, z) and q(z|x).

  Args:
    model: a VAE (`encode` / `decode` methods).
    params: its parameters.
    x: `[B, *event]` model inputs.
    posterior: q(z|x) of `x`, `[B, Z]` parameters.
    z: `[K, B, Z]` latents; the decoder maps them to `[K, B, *event]`
      parameters that broadcast against `x`.

  Returns:
    The `[K, B]` terms of the log importance weights.
  """
  likelihood = model.apply(params, z, method="decode")
  return ImportanceTerms(
      log_likelihood=likelihood.log_prob(x),
      log_prior=losses.std_normal_log_prob(z),
      log_posterior=losses.diag_gaussian_log_prob(z, posterior.mean,
                                                  posterior.log_var))


def log_importance_weights(model: models.VAE, params: Any, x: jax.Array,
                           rng: jax.Array, num_samples: int) -> jax.Array:
  """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x).

  E_q[w_k] = p(x), so `iwae_bound` of these weights is a lower bound on
  log p(x) that tightens as K grows (Burda et al., 2015).

  Args:
    model: a VAE.
    params: its parameters.
    x: `[B, *event]` model inputs.
    rng: key for the K reparameterized samples.
    num_samples: K, static.

  Returns:
    `[K, B]` log importance weights in nats.
  """
  posterior = model.apply(params, x, method="encode")
  z = losses.reparameterize(rng, posterior.mean, posterior.log_var,
                            num_samples=num_samples)
  return importance_terms(model, params, x, posterior, z).log_weights


def iwae_bound(log_weights: jax.Array) -> jax.Array:
  """log (1/K) sum_k w_k from `[K, ...]` log-weights, shape `[...]`.

  Computed as logsumexp (max-shifted, so no weight overflows or underflows to
  zero all at once) minus log K. K = 1 gives the single-sample ELBO.
  """
  k = log_weights.shape[0]
  return jax.nn.logsumexp(log_weights, axis=0) - math.log(k)


# ----------------------------------------------------------------------------
# Objectives.


def elbo_objective(model, num_samples: int = 1) -> Objective:
  """The beta-VAE loss with `num_samples` reparameterized samples per example.

  -ELBO_beta = -E_q[log p(x|z)] + beta KL(q(z|x) || p(z)), the expectation
  estimated by the mean over the samples and the KL in closed form.
  Metrics: `recon` = -log p(x|z), `kl` = KL(q(z|x) || p(z)) and
  `nelbo` = recon + kl, the unweighted bound on -log p(x) whatever beta is.
  """

  def objective(params, x, rng, hparams):
    if num_samples == 1:
      # The path of runs made before num_samples existed: they resume and
      # reproduce bit for bit.
      out = model.apply(params, x, rng)
      posterior = out.posterior
      log_likelihood = out.likelihood.log_prob(x)
    else:
      posterior = model.apply(params, x, method="encode")
      z = losses.reparameterize(rng, posterior.mean, posterior.log_var,
                                num_samples=num_samples)
      log_likelihood = jnp.mean(
          model.apply(params, z, method="decode").log_prob(x), axis=0)
    kl = jnp.sum(losses.kl_to_std_normal(posterior.mean, posterior.log_var),
                 axis=-1)
    loss = losses.negative_elbo(log_likelihood, kl, hparams["beta"])
    return loss, {"loss": loss, "recon": -log_likelihood, "kl": kl,
                  "nelbo": -log_likelihood + kl}

  return objective


def iwae_objective(model, num_samples: int) -> Objective:
  """The importance-weighted bound of Burda et al. (2015), K samples.

  loss = -log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x), a bound on
  -log p(x) that tightens with K. With K = 1 it is the ELBO with a Monte
  Carlo KL (the `elbo` objective uses the closed-form KL instead, so the two
  agree in expectation, not sample by sample).

  Metrics: `loss` is the -IWAE bound; `recon` (-log p(x|z_1)), `kl`
  (closed form) and `nelbo` (their sum) are the single-sample ELBO terms of
  the first sample, so they read like the `elbo` objective's.
  """

  def objective(params, x, rng, hparams):
    del hparams  # beta is validated to be 1: the bound has no weight.
    posterior = model.apply(params, x, method="encode")
    z = losses.reparameterize(rng, posterior.mean, posterior.log_var,
                              num_samples=num_samples)
    terms = importance_terms(model, params, x, posterior, z)
    loss = -iwae_bound(terms.log_weights)
    recon = -terms.log_likelihood[0]
    kl = jnp.sum(losses.kl_to_std_normal(posterior.mean, posterior.log_var),
                 axis=-1)
    return loss, {"loss": loss, "recon": recon, "kl": kl,
                  "nelbo": recon + kl}

  return objective


def create(config: ml_collections.ConfigDict, model) -> Objective:
  """The objective named by the `objective` config section."""
  validate_config(config)
  if config.name == "iwae":
    return iwae_objective(model, num_samples_of(config))
  return elbo_objective(model, num_samples_of(config))
