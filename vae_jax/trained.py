"""A trained workdir as a Python object: the notebook API.

    from vae_jax import trained
    m = trained.load("workdirs/mnist_vae")
    x = m.test_images(16)                # [16, 28, 28, 1] floats in [0, 1]
    q = m.encode(x)                      # VAE: Posterior(mean, log_var)
    x_hat = m.reconstruct(x)             # E[x|z] at the posterior mean
    samples = m.sample(16, seed=0)       # E[x|z], z ~ p(z) (VAEs)
    scores = m.score(x)                  # per-example -ELBO terms, or
                                         # reconstruction error and PSNR
    nll = m.anomaly_scores(x, "nll")     # higher = more anomalous
    results = m.evaluate()               # every evaluator, as in training

Inputs are raw examples `[N, *event]`, prepared as the run prepared its test
data: uint8 pixels get the test set's fixed binarization (or dequantization)
where the run had one, else are scaled to [0, 1]; float images are used as
given and must lie in the model's support (pixels in [0, 1]; binary for a
Bernoulli VAE), else UserError; a table's rows are standardized with the
run's saved statistics. Any input may also be the path of a file or folder of the
kinds training reads (`.npz`/`.npy`, a folder of images, a `.csv`; labels
are dropped). Every method is
jit-compiled once per input shape; all but `decode` (a `models.Likelihood`
of device arrays) and `evaluate` return numpy arrays. Loading reads the
test split only, never the training set.
"""

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import compiler
from vae_jax import config_lib
from vae_jax import evaluators
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import objectives
from vae_jax import sharding
from vae_jax import sources
from vae_jax import steps
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError
from vae_jax.evaluators import anomaly


class TrainedModel:
  """A model and its parameters from a checkpoint of a workdir."""

  def __init__(self, config: ml_collections.ConfigDict,
               model: models.VAE | models.Autoencoder, params: Any, step: int,
               data: input_pipeline.Dataset, mesh: sharding.Mesh,
               workdir: str | None = None):
    self.workdir = workdir
    self.config, self.model, self.params, self.step = (config, model, params,
                                                       step)
    self.data = data
    self.event_shape = tuple(data.event_shape)
    self.is_vae = models.is_vae(config.model)
    self._likelihood = models.resolve_likelihood(config.model,
                                                 self.event_shape)[0]
    self._mesh = mesh
    self._objective = objectives.create(config.objective, model)
    self._hparams = steps.hparams_of(config)
    # Compiled as the run's programs are (`compiler.jit`): the same kernels.
    self._jit = functools.partial(
        compiler.jit, tree_reductions=models.is_convolutional(config.model))
    self._encode = self._jit(functools.partial(model.apply, method="encode"))
    self._decode = self._jit(functools.partial(model.apply, method="decode"))
    self._reconstruct = self._jit(
        functools.partial(model.apply, method="reconstruct"))
    self._score = self._jit(functools.partial(steps.eval_step,
                                              objective=self._objective))
    self._anomaly = {}  # num_samples -> jitted `anomaly.scores_of`
    self._sample = self._jit(functools.partial(model.apply,
                                               method="sample_prior"),
                             static_argnums=2)

  def _inputs(self, x) -> jax.Array:
    if isinstance(x, (str, os.PathLike)):
      path = os.fspath(x)
      x = sources.read_path(sources.guess_source(path), path,
                            self.config.data.label_column).x
    x = np.asarray(x)
    if x.shape[1:] != self.event_shape:
      shape = ", ".join(map(str, self.event_shape))
      raise UserError(f"Expected inputs [N, {shape}], got {list(x.shape)}.")
    if self.data.kind == "table":
      if self.data.standardization is not None:
        x = self.data.standardization.apply(x)
      return jnp.asarray(input_pipeline.to_float(x))
    seed = self.config.data.binarization_seed
    if x.dtype == np.uint8:  # Prepared as the test set was.
      if self.data.binarization in ("dynamic", "static"):
        x = input_pipeline.binarize(x, seed)
      elif self.data.binarization == "dequantize":
        x = input_pipeline.dequantize(x, seed)
      return jnp.asarray(input_pipeline.to_float(x))
    x = x.astype(np.float32)
    lo, hi = (float(np.min(x)), float(np.max(x))) if x.size else (0., 0.)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo <= hi <= 1):
      raise UserError(
          f"Inputs are pixels in [0, 1] (floats) or 0..255 (uint8), as the "
          f"run's data, but these floats span [{lo:.4g}, {hi:.4g}]: rescale "
          "them (x / 255 for 8-bit values).")
    binary = self.is_vae and self._likelihood == "bernoulli"
    if binary and not np.all((x == 0) | (x == 1)):
      raise UserError(
          "This VAE's Bernoulli likelihood is a distribution of binary "
          "pixels, but the inputs hold gray values: pass uint8 pixels "
          "(binarized as the test set is) or binarize them first "
          "(input_pipeline.binarize).")
    return jnp.asarray(x)

  def test_images(self, n: int | None = None) -> np.ndarray:
    """The first n test examples, ready for the other methods.

    Images as the run scores them (binarized if it binarizes), floats in
    [0, 1]; a table's rows raw (not standardized: the methods do it).
    """
    x = self.data.test_x[:n]
    if self.data.standardization is not None:
      return self.data.standardization.invert(x)
    return input_pipeline.to_float(x)

  def test_labels(self, n: int | None = None) -> np.ndarray | None:
    """The first n test labels `[n]` (indices into `class_names`), or None
    for unlabeled data. Labels are for evaluation only: no training step
    sees them."""
    return None if self.data.test_labels is None else np.asarray(
        self.data.test_labels[:n])

  @property
  def class_names(self) -> tuple[str, ...]:
    """The name of each label index; () for unlabeled data."""
    return self.data.class_names

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
    """E[x|z] for n latents z ~ p(z) (VAEs only), `[n, *event]`."""
    if not self.is_vae:
      raise UserError("An autoencoder has no prior to sample from; use a VAE.")
    z = self._sample(self.params, jax.random.key(seed), n)
    return np.asarray(self.decode(z).mean())

  def score(self, x, seed: int = 0) -> dict[str, np.ndarray]:
    """The objective's per-example test metrics on x, `[N]` each.

    The function the `elbo` evaluator averages over the test set
    (`steps.eval_step`). Per example, except the batch-level terms, which
    depend on the whole x: the sparsity penalty (and `loss` with it) and a
    free-bits `loss`.

    VAEs: `nelbo` (single-sample -ELBO, nats), `recon`, `kl`; for the
    importance-sampled log p(x) of the test set use `evaluate()`.
    Autoencoders: `recon` (nats), `mse`, `psnr` (dB) and the code
    statistics; a denoising autoencoder first corrupts x with noise drawn
    from `seed`, and scores reconstructing clean x.
    """
    metrics = self._score(self.params, self._hparams, self._inputs(x),
                          jax.random.key(seed))
    return {k: np.asarray(v) for k, v in metrics.items()}

  def anomaly_scores(self, x, score: str | None = None,
                     num_samples: int | None = None
                     ) -> np.ndarray | dict[str, np.ndarray]:
    """Per-example anomaly scores, higher = more anomalous (`[N]` each).

    The scores of the `anomaly` evaluator (`evaluators.anomaly`): recon and
    mse (every model), nelbo, nll, latent and nll_complexity (VAEs), the
    same numbers for
    the same examples: importance sample j of example n (its index in x) is
    drawn from `fold_in(fold_in(Keys.importance, n), j)`.

    Args:
      x: examples, as for the other methods.
      score: one score's name; None for all of them, as a dict.
      num_samples: K of nelbo and nll; default `evals.anomaly.num_samples`.

    Raises:
      UserError: a score this model does not have.
    """
    names = anomaly.VAE_SCORES if self.is_vae else anomaly.AE_SCORES
    if score is not None and score not in names:
      raise UserError(f"Unknown anomaly score {score!r}; this model has "
                      f"{', '.join(names)}.")
    entry = self.config.evals.anomaly
    num = num_samples or entry.num_samples
    fn = self._anomaly.get(num)
    if fn is None:
      fn = self._anomaly[num] = self._jit(functools.partial(
          anomaly.scores_of, self.model, is_vae=self.is_vae,
          num_samples=num, chunk_size=min(entry.chunk_size, num)))
    x = self._inputs(x)
    host_x = np.asarray(x)
    rng = steps.Keys.from_seed(self.config.seed).importance
    size = self.config.eval.batch_size
    out = []
    for start in range(0, len(x), size):  # Padded: one compiled shape.
      batch = x[start:start + size]
      padded = jnp.zeros((size, *batch.shape[1:]), batch.dtype).at[
          :len(batch)].set(batch)
      scores = fn(self.params, padded, rng, jnp.int32(start))
      out.append({name: np.asarray(v)[:len(batch)]
                  for name, v in scores.items()})
    scores = anomaly.host_scores(
        {name: np.concatenate([o[name] for o in out]) for name in out[0]},
        host_x)
    return scores if score is None else scores[score]

  def evaluate(self) -> dict[str, evaluators.Output]:
    """Runs every enabled evaluator of the config, as training does.

    Returns:
      `{name: Output}`: each evaluator's metrics, labels and images.
    """
    ctx = evaluators.Context(configs=[self.config], model=self.model,
                             objective=self._objective, data=self.data,
                             mesh=self._mesh,
                             workdirs=[self.workdir] if self.workdir else None)
    keys = steps.Keys.from_seed(self.config.seed)
    stacked = lambda tree: jax.tree.map(
        lambda a: sharding.global_array(np.asarray(a)[None],
                                        self._mesh.models), tree)
    state = steps.TrainState(
        step=stacked(np.int32(self.step)), params=stacked(self.params),
        opt_state=None, rng=stacked(jax.random.key_data(keys.loop)),
        hparams=stacked(self._hparams))
    return {name: ev.run(state)[0]
            for name, ev in evaluators.create(ctx).items()}


def load(workdir: str, step: int | None = None,
         config: ml_collections.ConfigDict | None = None) -> TrainedModel:
  """Loads the run in `workdir` at its latest checkpoint (or at `step`).

  Args:
    workdir: a training run's directory.
    step: a saved step; default the latest.
    config: the config to evaluate with; default the run's config.json. It
      may differ from the run's in what a resumed run may change (e.g. the
      `evals` section), and is validated here.

  Raises:
    UserError: no such workdir, no checkpoint (at `step`), an incompatible
      config, or a checkpoint that does not match the model.
  """
  if not os.path.isdir(workdir):
    raise UserError(f"Workdir {workdir} does not exist.")
  if config is None:
    config = workdir_lib.load_config(workdir)
  config_lib.validate(config)
  workdir_lib.check_compatible(config, workdir)
  saved = workdir_lib.checkpoint_steps(workdir)
  if not saved:
    raise UserError(f"Workdir {workdir} holds no checkpoint; train first.")
  step = saved[-1] if step is None else step
  if step not in saved:
    raise UserError(f"Workdir {workdir} has no checkpoint at step {step}; it "
                    f"has {saved}.")
  data = input_pipeline.load(
      config.data, train=False,
      standardization=workdir_lib.read_standardization(workdir))
  model = models.create_model(config.model, data.event_shape)
  like = jax.eval_shape(lambda: models.init_params(
      model, jax.random.key(0), data.event_shape))
  params = workdir_lib.restore_checked(workdir_lib.checkpoint_manager(workdir), step,
                               like, params_only=True)
  mesh = sharding.create(config.training.model_axis_size)
  return TrainedModel(config, model, params, step, data, mesh, workdir)
