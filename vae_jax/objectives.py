"""Training objectives: a model plus loss terms, per example.

An objective is a pure function

    objective(params, x, rng, hparams) -> (loss, metrics)

with `x` a `[B, *event]` batch of model inputs, `loss` shaped `[B]` and
`metrics` a dict of `[B]` arrays in nats. `hparams` holds the scalar
hyperparameters that may differ between models trained together in one
vmapped group (beta, ...); everything that changes shapes or code paths is
fixed when the objective is created.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import losses
from vae_jax.errors import UserError

Objective = Callable[[Any, jax.Array, jax.Array, dict[str, jax.Array]],
                     tuple[jax.Array, dict[str, jax.Array]]]
OBJECTIVES = ("elbo",)


def validate_config(config: ml_collections.ConfigDict) -> None:
  if config.name not in OBJECTIVES:
    raise UserError(f"Unknown objective.name {config.name!r}; "
                    f"known: {', '.join(OBJECTIVES)}.")
  if config.beta < 0:
    raise UserError(f"objective.beta must be >= 0, got {config.beta}.")


def hparams(config: ml_collections.ConfigDict) -> dict[str, float]:
  """The objective's per-model scalar hyperparameters."""
  return {"beta": float(config.beta)}


def metric_names(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The keys of the metrics dict the objective returns."""
  del config  # Every objective so far reports the same terms.
  return ("loss", "recon", "kl", "nelbo")


def elbo_objective(model) -> Objective:
  """The beta-VAE loss with one reparameterized sample per example.

  Metrics: `recon` = -log p(x|z), `kl` = KL(q(z|x) || p(z)) and
  `nelbo` = recon + kl, the unweighted bound on -log p(x) whatever beta is.
  """

  def objective(params, x, rng, hparams):
    out = model.apply(params, x, rng)
    log_likelihood = out.likelihood.log_prob(x)
    kl = jnp.sum(losses.kl_to_std_normal(out.posterior.mean,
                                         out.posterior.log_var), axis=-1)
    loss = losses.negative_elbo(log_likelihood, kl, hparams["beta"])
    return loss, {"loss": loss, "recon": -log_likelihood, "kl": kl,
                  "nelbo": -log_likelihood + kl}

  return objective


def create(config: ml_collections.ConfigDict, model) -> Objective:
  """The objective named by the `objective` config section."""
  validate_config(config)
  return elbo_objective(model)
