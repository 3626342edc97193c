"""A trained workdir as a Python object.

    from vae_jax import trained
    m = trained.load("workdirs/mnist_vae")
    x = m.test_images(16)                # [16, 28, 28, 1] floats in [0, 1]
    q = m.encode(x)                      # VAE: Posterior(mean, log_var)
    x_hat = m.reconstruct(x)             # E[x|z] at the posterior mean
    samples = m.sample(16, seed=0)       # E[x|z], z ~ N(0, I) (VAEs)
    scores = m.score(x)                  # per-example -ELBO terms, or
                                         # reconstruction error and PSNR

Inputs are `[N, *event]` arrays in [0, 1] (uint8 pixels are scaled); they are
used as given, so binarize them first to score a binarized-data model the
way its test set is scored (`test_images` does this). Every method is
jit-compiled once per input shape; all but `decode` (a `models.Likelihood`
of device arrays) return numpy arrays.
"""

import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import objectives
from vae_jax.errors import UserError

_TUPLE_FIELDS = ("hidden", "conv_channels")


def upgrade_config(config: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """Fills fields a saved config predates, and restores tuples from JSON."""
  d = config.to_dict()
  for name, value in models.ADDED_FIELDS.items():
    d["model"].setdefault(name, value)
  if d["objective"]["name"] in objectives.VAE_OBJECTIVES:
    for name, value in objectives.ADDED_FIELDS.items():
      d["objective"].setdefault(name, value)
  for name in _TUPLE_FIELDS:
    if name in d.get("model", {}):
      d["model"][name] = tuple(d["model"][name])
  return ml_collections.ConfigDict(d)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config.json of a run, upgraded to the current fields."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"Workdir {workdir} has no config.json: give the workdir "
                    "of a training run.")
  with open(path) as f:
    return upgrade_config(ml_collections.ConfigDict(json.load(f)))


def checkpoint_manager(workdir: str, config: ml_collections.ConfigDict
                       ) -> ocp.CheckpointManager:
  """The Orbax manager of a run's `checkpoints/` (created if missing)."""
  return ocp.CheckpointManager(
      os.path.abspath(os.path.join(workdir, "checkpoints")),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=config.training.checkpoints_to_keep, create=True))


def latest_checkpoint(workdir: str, config: ml_collections.ConfigDict):
  """(manager, step) of the latest checkpoint, or UserError if none."""
  # Checked first: the manager would create the directory.
  if os.path.isdir(os.path.join(workdir, "checkpoints")):
    manager = checkpoint_manager(workdir, config)
    step = manager.latest_step()
    if step is not None:
      return manager, step
  raise UserError(f"Workdir {workdir} holds no checkpoint; train first.")


def restore_params(manager, step: int, model: models.VAE | models.Autoencoder,
                   event_shape: tuple[int, ...]) -> Any:
  """The parameters saved at `step`, checked against the model's shapes."""
  # Only the parameters are needed: restoring without a target skips
  # rebuilding the optimizer state.
  params = manager.restore(step, args=ocp.args.StandardRestore())["params"]
  expected = jax.eval_shape(
      lambda: models.init_params(model, jax.random.key(0), event_shape))
  shapes = lambda t: jax.tree.map(lambda a: tuple(a.shape), t)
  if (jax.tree.structure(params) != jax.tree.structure(expected)
      or shapes(params) != shapes(expected)):
    raise UserError(f"The checkpoint at step {step} in {manager.directory} "
                    "does not match the model in its config.json.")
  return jax.tree.map(lambda a, e: jnp.asarray(a, e.dtype), params, expected)


class TrainedModel:
  """A model and its parameters from a workdir's latest checkpoint."""

  def __init__(self, config: ml_collections.ConfigDict,
               model: models.VAE | models.Autoencoder, params: Any, step: int,
               data: input_pipeline.Dataset):
    self.config, self.model, self.params, self.step = (config, model, params,
                                                       step)
    self.data = data
    self.event_shape = tuple(data.event_shape)
    self.is_vae = models.is_vae(config.model)
    self._objective = objectives.create(config.objective, model, config.model)
    self._hparams = {k: jnp.float32(v) for k, v in
                     objectives.hparams(config.objective).items()}
    self._encode = jax.jit(functools.partial(model.apply, method="encode"))
    self._decode = jax.jit(functools.partial(model.apply, method="decode"))
    self._reconstruct = jax.jit(
        functools.partial(model.apply, method="reconstruct"))
    self._score = jax.jit(self._objective)

  def _inputs(self, x) -> jax.Array:
    x = np.asarray(x)
    if x.shape[1:] != self.event_shape:
      shape = ", ".join(map(str, self.event_shape))
      raise UserError(f"Expected inputs [N, {shape}], got {list(x.shape)}.")
    if x.dtype == np.uint8:
      return jnp.asarray(x, jnp.float32) / 255.0
    return jnp.asarray(x, jnp.float32)

  def test_images(self, n: int | None = None) -> np.ndarray:
    """The first n test images as the run scores them, floats in [0, 1]."""
    images = self.data.test_images[:n]
    return np.asarray(images, np.float32) / 255.0

  def encode(self, x):
    """q(z|x) (`models.Posterior`) for a VAE, the code `[N, Z]` for an AE."""
    return jax.tree.map(np.asarray, self._encode(self.params, self._inputs(x)))

  def decode(self, z) -> models.Likelihood:
    """p(x|z) for latents or codes `[..., Z]`; `.mean()` gives E[x|z]."""
    return self._decode(self.params, jnp.asarray(z, jnp.float32))

  def reconstruct(self, x) -> np.ndarray:
    """E[x|z] at the posterior mean (VAE) or the code (AE), `[N, *event]`."""
    return np.asarray(self._reconstruct(self.params, self._inputs(x)))

  def sample(self, n: int, seed: int = 0) -> np.ndarray:
    """E[x|z] for n latents z ~ N(0, I) (VAEs only), `[n, *event]`."""
    if not self.is_vae:
      raise UserError("An autoencoder has no prior to sample from; use a VAE.")
    z = jax.random.normal(jax.random.key(seed),
                          (n, self.config.model.latent_dim))
    return np.asarray(self.decode(z).mean())

  def score(self, x, seed: int = 0) -> dict[str, np.ndarray]:
    """The objective's metrics on x, `[N]` each.

    Per example, except the batch-level terms, which depend on the whole x:
    the sparsity penalty (and `loss` with it) and a free-bits `loss`.

    VAEs: `nelbo` (single-sample -ELBO, nats), `recon`, `kl`; for
    importance-sampled log p(x) use `vae_jax.evaluate`. Autoencoders:
    `recon` (nats), `mse`, `psnr` (dB) and the code statistics; a denoising
    autoencoder first corrupts x with noise drawn from `seed` (its run's
    evaluation draws from its own key), and scores reconstructing clean x.
    """
    _, metrics = self._score(self.params, self._inputs(x),
                             jax.random.key(seed), self._hparams)
    return {k: np.asarray(v) for k, v in metrics.items()}


def load(workdir: str, step: int | None = None) -> TrainedModel:
  """Loads the run in `workdir` at its latest checkpoint (or at `step`)."""
  if not os.path.isdir(workdir):
    raise UserError(f"Workdir {workdir} does not exist.")
  config = load_config(workdir)
  manager, latest = latest_checkpoint(workdir, config)
  step = latest if step is None else step
  if step not in manager.all_steps():
    raise UserError(f"Workdir {workdir} has no checkpoint at step {step}; it "
                    f"has {sorted(manager.all_steps())}.")
  data = input_pipeline.load(config.data)
  model = models.create_model(config.model, data.event_shape)
  params = restore_params(manager, step, model, data.event_shape)
  return TrainedModel(config, model, params, step, data)
