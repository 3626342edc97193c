"""Training objectives: a model plus loss terms, per example.

An objective is a pure function

    objective(params, x, rng, hparams, step=None) -> (loss, metrics)

with `x` a `[B, *event]` batch of model inputs, `loss` shaped `[B]` and
`metrics` a dict of `[B]` arrays (nats, or dB for PSNR). `hparams` holds the
scalar hyperparameters that may differ between models trained together in
one vmapped group, named in `HPARAMS` (the one table of them: it drives
grouping, the step's inputs and the sweep summary); `step`, the update count,
is given in training for schedules such as the KL warm-up (evaluation
passes none and scores the full objective). Everything that changes shapes
or code paths is fixed when the objective is created
(`objective.num_samples`, the corruption, ...).

VAEs train on `elbo` (beta-VAE, KL warm-up, free bits) or `iwae`;
autoencoders on `ae` (plain, denoising, sparse).

The importance weights of a diagonal Gaussian posterior live here too
(`importance_terms`, `log_importance_weights`, `iwae_bound`): the IWAE
objective trains on them and `vae_jax.importance` scores log p(x) with them, so
both compute exactly the same per-example quantity.
"""

from collections.abc import Callable
import math
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import corruption
from vae_jax import losses
from vae_jax import models
from vae_jax.errors import UserError

Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]
# Each objective's per-model scalar hyperparameters (`objective.<name>`
# fields): models of one vmapped group may differ in these.
HPARAMS = {
    "elbo": ("beta",),
    "iwae": (),
    "ae": ("noise_level", "l1_weight", "sparsity_weight", "sparsity_target"),
}
OBJECTIVES = tuple(HPARAMS)
# A code unit whose activation is below this counts as near zero.
NEAR_ZERO = 0.01


def validate_config(config: ml_collections.ConfigDict,
                    model_config: ml_collections.ConfigDict | None = None
                    ) -> None:
  """Raises UserError for an objective config (and model) that cannot run."""
  if config.name not in OBJECTIVES:
    raise UserError(f"Unknown objective.name {config.name!r}; "
                    f"known: {', '.join(OBJECTIVES)}.")
  if model_config is not None:
    vae = models.is_vae(model_config)
    if vae and config.name == "ae":
      raise UserError(f"objective.name='ae' trains autoencoders; "
                      f"model.name={model_config.name!r} is a VAE: use elbo "
                      "or iwae.")
    if not vae and config.name != "ae":
      raise UserError(f"objective.name={config.name!r} needs a VAE; "
                      f"model.name={model_config.name!r} is an autoencoder: "
                      "use objective.name='ae'.")
  if config.name == "ae":
    _validate_ae(config, model_config)
    return
  if config.beta < 0:
    raise UserError(f"objective.beta must be >= 0, got {config.beta}.")
  k = config.num_samples
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise UserError(
        f"objective.num_samples must be an integer >= 1, got {k!r}.")
  if config.name == "iwae" and config.beta != 1.0:
    # The IWAE bound has no KL term to weight: refuse rather than ignore it.
    raise UserError(f"objective.beta={config.beta} has no meaning for the "
                    "iwae objective; leave it at 1.0 (use elbo for a "
                    "beta-VAE).")
  warmup, free_bits = config.kl_warmup_steps, config.free_bits
  if warmup < 0 or free_bits < 0:
    raise UserError("objective.kl_warmup_steps and objective.free_bits must "
                    f"be >= 0, got {warmup} and {free_bits}.")
  if config.name == "iwae" and (warmup or free_bits):
    raise UserError("objective.kl_warmup_steps and objective.free_bits "
                    "shape the elbo objective's KL term; the iwae bound has "
                    "none: set them to 0.")


def _validate_ae(config: ml_collections.ConfigDict,
                 model_config: ml_collections.ConfigDict | None) -> None:
  corruption.validate(config.corruption, config.noise_level)
  if config.l1_weight < 0 or config.sparsity_weight < 0:
    raise UserError("objective.l1_weight and objective.sparsity_weight must "
                    f"be >= 0, got {config.l1_weight} and "
                    f"{config.sparsity_weight}.")
  if not 0 < config.sparsity_target < 1:
    raise UserError("objective.sparsity_target (rho) must be in (0, 1), got "
                    f"{config.sparsity_target}.")
  if config.sparsity_weight > 0 and model_config is not None:
    activation = model_config.code_activation
    if activation != "sigmoid":
      raise UserError("The KL sparsity penalty compares mean activations "
                      "with a probability rho: it needs "
                      f"model.code_activation='sigmoid', got {activation!r}.")


def hparams(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The objective's per-model scalar hyperparameters (`HPARAMS`)."""
  return {name: float(config[name]) for name in HPARAMS[config.name]}


# ----------------------------------------------------------------------------
# Importance weights, shared with `vae_jax.importance`.


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


def elbo_objective(model, num_samples: int = 1, kl_warmup_steps: int = 0,
                   free_bits: float = 0.0) -> Objective:
  """The beta-VAE loss with `num_samples` reparameterized samples per example.

  -ELBO_beta = -E_q[log p(x|z)] + beta KL(q(z|x) || p(z)), the expectation
  estimated by the mean over the samples and the KL in closed form. In
  training the KL weight ramps linearly from 0 to beta over
  `kl_warmup_steps` steps, and with `free_bits` > 0 the KL term is
  `losses.free_bits_kl` (a floor per latent unit).
  Metrics: `recon` = -log p(x|z), `kl` = KL(q(z|x) || p(z)) and
  `nelbo` = recon + kl, the unweighted bound on -log p(x) whatever beta,
  warm-up and free bits are.
  """

  def objective(params, x, rng, hparams, step=None):
    if num_samples == 1:
      # The model's own forward pass (encode, sample, decode) with one draw.
      out = model.apply(params, x, rng)
      posterior = out.posterior
      log_likelihood = out.likelihood.log_prob(x)
    else:
      posterior = model.apply(params, x, method="encode")
      z = losses.reparameterize(rng, posterior.mean, posterior.log_var,
                                num_samples=num_samples)
      log_likelihood = jnp.mean(
          model.apply(params, z, method="decode").log_prob(x), axis=0)
    kl_per_unit = losses.kl_to_std_normal(posterior.mean, posterior.log_var)
    kl = jnp.sum(kl_per_unit, axis=-1)
    kl_term = (losses.free_bits_kl(kl_per_unit, free_bits) if free_bits > 0
               else kl)
    beta = hparams["beta"]
    if kl_warmup_steps > 0 and step is not None:
      beta = losses.kl_warmup_weight(beta, step, kl_warmup_steps)
    loss = losses.negative_elbo(log_likelihood, kl_term, beta)
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

  def objective(params, x, rng, hparams, step=None):
    del hparams, step  # The bound has no weight and no schedule.
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


def ae_objective(model, corruption_name: str = "none") -> Objective:
  """Autoencoders: plain, denoising and sparse, by their hyperparameters.

  loss = -log p(x | h) + l1_weight sum_j |h_j|
         + sparsity_weight sum_j KL(rho || rho_hat_j),
  h = encode(corrupt(x)): a denoising autoencoder encodes a corrupted input
  (`corruption_name` at `hparams["noise_level"]`, drawn with the step's
  key) and is scored on reconstructing the clean x. -log p(x|h) is the
  Bernoulli cross-entropy or the Gaussian negative log-density (MSE / 2
  sigma^2 plus its constants), in nats.

  Metrics: `recon` (nats), `mse` and `psnr` (dB) of E[x|h] against the
  clean x, `psnr_input` (dB) of the corrupted input against the clean x
  (denoising only), the two penalties as added to the loss (`l1`,
  `sparsity`), `code_mean` (mean activation of the code units) and
  `code_near_zero` (fraction of units with |h_j| < NEAR_ZERO).
  """

  def objective(params, x, rng, hparams, step=None):
    del step  # No schedule.
    event_ndim = x.ndim - 1
    x_in = corruption.corrupt(corruption_name, x, rng, hparams["noise_level"])
    out = model.apply(params, x_in)
    code, likelihood = out.code, out.likelihood
    recon = -likelihood.log_prob(x)
    l1 = hparams["l1_weight"] * losses.l1_penalty(code)
    sparsity = hparams["sparsity_weight"] * losses.sparsity_penalty(
        code, hparams["sparsity_target"])
    loss = recon + l1 + sparsity
    mse = losses.squared_error(likelihood.mean(), x, event_ndim)
    metrics = {"loss": loss, "recon": recon, "mse": mse,
               "psnr": losses.psnr(mse), "l1": l1, "sparsity": sparsity,
               "code_mean": jnp.mean(code, axis=-1),
               "code_near_zero": jnp.mean(jnp.abs(code) < NEAR_ZERO,
                                          axis=-1).astype(jnp.float32)}
    if corruption_name != "none":
      metrics["psnr_input"] = losses.psnr(
          losses.squared_error(x_in, x, event_ndim))
    return loss, metrics

  return objective


def create(config: ml_collections.ConfigDict, model) -> Objective:
  """The objective named by the (validated) `objective` config section."""
  if config.name == "ae":
    return ae_objective(model, config.corruption)
  if config.name == "iwae":
    return iwae_objective(model, config.num_samples)
  return elbo_objective(model, config.num_samples, config.kl_warmup_steps,
                        config.free_bits)
