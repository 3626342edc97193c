r"""Anomaly detection: per-example scores, and how well they find anomalies.

A model trained on normal data gives unusual inputs a poor reconstruction or
a low likelihood. Scores, per example, higher = more anomalous:

  recon   -log p(x|z) at the posterior mean (VAE) or the code (AE), nats of
          the decoder's likelihood (for an AE with a Bernoulli decoder on
          gray pixels: the cross-entropy reconstruction loss);
  mse     the squared error of E[x|z] at the same z, mean over dimensions;
  nelbo   VAEs: -ELBO from K samples of q(z|x) (Monte Carlo KL), nats;
  nll     VAEs: -log p(x) by importance sampling with the same K samples
          (Burda et al. 2015, `vae_jax.importance`), nats;
  latent  VAEs: -log N(mu(x); 0, I), the prior's density at the posterior
          mean, nats;
  nll_complexity  VAEs: nll minus the input's complexity, its code length
          in nats under a generic lossless compressor (bz2 of the packed
          bits, or of the 8-bit pixels): Serra et al. 2020, "Input
          complexity and out-of-distribution detection with likelihood-based
          generative models", Eq. 2. A raw likelihood ranks simple inputs
          (few lit pixels) as normal whatever the model learned; the
          difference is a likelihood ratio against a generic model.

Normal examples are those of `evals.anomaly.normal_classes` (default: the
model's `data.train_classes`), anomalous ones the other classes. For each
score, on the whole test split: AUROC, AUPRC (average precision, anomalies
positive) and the false-positive rate at 95% true-positive rate
(scikit-learn's `roc_auc_score`, `average_precision_score`, `roc_curve`).
With a validation split (`data.validation_fraction`), a threshold is the
(1 - target_fpr) quantile of the score on its normal examples, and the
precision and recall of `score > threshold` on the test split are reported.
Figures: ROC curves and score histograms (normal vs anomalous).
"""

import bz2
import functools
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import compiler
from vae_jax import importance
from vae_jax import input_pipeline
from vae_jax import losses
from vae_jax import sharding
from vae_jax import splits
from vae_jax import steps
from vae_jax import writers
from vae_jax.errors import UserError
from vae_jax.evaluators import common

VAE_SCORES = ("recon", "mse", "nelbo", "nll", "latent", "nll_complexity")
# Scores computed on the host from the others and the inputs.
_HOST_SCORES = ("nll_complexity",)
AE_SCORES = ("recon", "mse")


def scores_of(model, params, x: jax.Array, rng: jax.Array,
              first_index: jax.Array, *, is_vae: bool, num_samples: int,
              chunk_size: int) -> dict[str, jax.Array]:
  """Every anomaly score of a batch, `{name: [B]}` (module docstring).

  Args:
    model: a VAE or an autoencoder.
    params: its parameters.
    x: `[B, *event]` examples (uint8 pixels, or floats as the run feeds
      them).
    rng: the importance-sampling key; sample j of example n is drawn from
      `fold_in(fold_in(rng, first_index + n), j)` (`vae_jax.importance`).
    first_index: `[]` int, the index of `x[0]` in the scored set.
    is_vae, num_samples, chunk_size: static.
  """
  inputs = input_pipeline.preprocess(x, None, "none")
  event_ndim = inputs.ndim - 1
  code = model.apply(params, inputs, method="encode")
  z = code.mean if is_vae else code
  likelihood = model.apply(params, z, method="decode")
  out = {"recon": -likelihood.log_prob(inputs),
         "mse": losses.squared_error(likelihood.mean(), inputs, event_ndim)}
  if is_vae:
    terms = importance.evaluate_batch(
        model, params, x, jnp.ones(x.shape[0]), rng, first_index,
        num_samples=num_samples, chunk_size=chunk_size)
    out["nll"] = -terms["log_px"]
    out["nelbo"] = terms["nelbo_k"]
    out["latent"] = 0.5 * jnp.sum(jnp.square(z) + jnp.log(2 * jnp.pi),
                                  axis=-1)
  return out


def input_complexity(x: np.ndarray) -> np.ndarray:
  """`[N]` code lengths in nats of examples `x` `[N, ...]` under bz2: binary
  inputs (values 0 and 1, or 0 and 255) as packed bits, others as 8-bit
  pixels (floats in [0, 1] times 255, rounded). Serra et al. 2020 use such a
  generic compressor's length as the input's complexity."""
  x = np.asarray(x)
  flat = x.reshape(len(x), -1)
  top = 255 if x.dtype == np.uint8 else 1
  if np.all((flat == 0) | (flat == top)):
    rows = [np.packbits(r == top).tobytes() for r in flat]
  else:
    scaled = flat if x.dtype == np.uint8 else np.round(
        np.clip(flat, 0, 1) * 255)
    rows = [r.astype(np.uint8).tobytes() for r in scaled]
  return np.array([8 * len(bz2.compress(r, 9)) for r in rows],
                  np.float64) * np.log(2.0)


def host_scores(scores: dict[str, np.ndarray],
                x: np.ndarray) -> dict[str, np.ndarray]:
  """`scores` of `x` plus the host-computed ones (VAEs: nll_complexity)."""
  if "nll" in scores:
    scores = {**scores, "nll_complexity": (np.asarray(scores["nll"], np.float64)
                                           - input_complexity(x))}
  return scores


def detection_metrics(scores: np.ndarray,
                      is_anomaly: np.ndarray) -> dict[str, float]:
  """AUROC, AUPRC and FPR at 95% TPR of `scores` `[N]` (higher = anomalous)
  against `is_anomaly` `[N]` bool, in percent (scikit-learn)."""
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  fpr, tpr, _ = metrics.roc_curve(is_anomaly, scores)
  return {"auroc": 100 * float(metrics.roc_auc_score(is_anomaly, scores)),
          "auprc": 100 * float(metrics.average_precision_score(is_anomaly,
                                                               scores)),
          "fpr_at_95_tpr": 100 * float(fpr[np.argmax(tpr >= 0.95)])}


def _normal_classes(entry, config) -> str:
  return entry.normal_classes or config.data.train_classes


class Evaluator:
  """Scores, detection metrics, a threshold, and figures, for every model."""

  def __init__(self, entry: ml_collections.ConfigDict,
               ctx: common.Context):
    self.every_steps = entry.every_steps
    self.ctx = ctx
    self.num_samples = entry.num_samples
    self.chunk_size = min(entry.chunk_size, entry.num_samples)
    self.target_fpr = entry.target_fpr
    self.names = VAE_SCORES if ctx.is_vae else AE_SCORES
    self.keys = ctx.keys("importance")
    data = ctx.data
    if data.test_labels is None:
      raise UserError(f"evals.anomaly needs labelled test examples, but "
                      f"{data.name} has no labels.")
    self.normal = []  # [N_test] bool per model
    for c in ctx.configs:
      classes = splits.parse_classes(_normal_classes(entry, c))
      unknown = [k for k in classes if k not in data.class_names]
      if unknown:
        raise UserError(f"evals.anomaly: normal class {unknown[0]!r} is not "
                        f"a class of {data.name} ({', '.join(data.class_names)}).")
      ids = [data.class_names.index(k) for k in classes]
      normal = np.isin(data.test_labels, ids)
      if normal.all() or not normal.any():
        raise UserError(
            f"evals.anomaly needs normal and anomalous test examples, but "
            f"every test example of {data.name} is "
            f"{'normal' if normal.all() else 'anomalous'} (normal classes "
            f"{', '.join(classes)}), so AUROC is undefined: change "
            "data.test_classes or evals.anomaly.normal_classes.")
      self.normal.append((normal, ids))
    self.valid = (common.TestSet(data.valid_x, ctx.config.eval.batch_size,
                                 ctx.mesh)
                  if data.valid_x is not None else None)
    self._fns = {}  # Compiled scoring of a batch, per scored set.

  def _fn(self, dataset: common.TestSet):
    """The jitted scoring of batch i of `dataset` (compiled by `compile`)."""
    if id(dataset) not in self._fns:
      score = functools.partial(scores_of, self.ctx.model,
                                is_vae=self.ctx.is_vae,
                                num_samples=self.num_samples,
                                chunk_size=self.chunk_size)
      self._fns[id(dataset)] = compiler.jit(
          lambda params, images, rng, i: score(params, images[i], rng,
                                               i * dataset.batch_size),
          tree_reductions=self.ctx.convolutional)
    return self._fns[id(dataset)]

  def _sets(self) -> list[common.TestSet]:
    return [self.ctx.test_set] + ([self.valid] if self.valid else [])

  @staticmethod
  def validate(entry: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict) -> None:
    if not _normal_classes(entry, config):
      raise UserError("evals.anomaly needs normal classes: set "
                      "data.train_classes (train on normal data only) or "
                      "evals.anomaly.normal_classes.")
    for name in ("num_samples", "chunk_size"):
      if entry[name] < 1:
        raise UserError(f"evals.anomaly.{name} must be >= 1, got "
                        f"{entry[name]}.")
    if not 0 < entry.target_fpr < 1:
      raise UserError(f"evals.anomaly.target_fpr must be in (0, 1), got "
                      f"{entry.target_fpr}.")

  def compile(self, state: steps.TrainState) -> None:
    for dataset in self._sets():
      self._fns[id(dataset)] = self._fn(dataset).lower(
          self.ctx.select(state.params, 0), dataset.images,
          self.ctx.select(self.keys, 0),
          sharding.scalar(0, self.ctx.mesh.replicated)).compile()

  def _scores(self, params, rng, dataset, x) -> dict[str, np.ndarray]:
    """`{score: [N]}` over a padded `TestSet` of the examples `x`."""
    fn = self._fn(dataset)
    out = [sharding.to_host(fn(params, dataset.images, rng,
                               sharding.scalar(i, self.ctx.mesh.replicated)))
           for i in range(dataset.num_batches)]
    keep = dataset.host_mask.reshape(-1) > 0
    return host_scores(
        {k: np.concatenate([o[k] for o in out])[keep] for k in out[0]}, x)

  def run(self, state: steps.TrainState) -> list[common.Output]:
    outputs = []
    start = time.time()
    for i in range(self.ctx.num_models):
      params = self.ctx.select(state.params, i)
      rng = self.ctx.select(self.keys, i)
      test = self._scores(params, rng, self.ctx.test_set,
                          self.ctx.data.test_x)
      valid = (self._scores(params, rng, self.valid, self.ctx.data.valid_x)
               if self.valid is not None else None)
      outputs.append(self._report(i, test, valid))
      if self.ctx.num_models > 1:
        elapsed = time.time() - start
        logging.info("Anomaly scores (k=%d): model %d/%d  %.1f s  ETA %s",
                     self.num_samples, i + 1, self.ctx.num_models, elapsed,
                     writers.format_eta(
                         elapsed / (i + 1) * (self.ctx.num_models - i - 1)))
    return outputs

  def _report(self, i: int, test: dict[str, np.ndarray],
              valid: dict[str, np.ndarray] | None) -> common.Output:
    normal, ids = self.normal[i]
    anomalous = ~normal
    metrics = {"num_normal": int(normal.sum()),
               "num_anomalous": int(anomalous.sum())}
    for name in self.names:
      for k, v in detection_metrics(test[name], anomalous).items():
        metrics[f"{name}_{k}"] = v
    if valid is not None:
      valid_normal = np.isin(self.ctx.data.valid_labels, ids)
      for name in self.names:
        threshold = float(np.quantile(valid[name][valid_normal],
                                      1 - self.target_fpr))
        flagged = test[name] > threshold
        hits = int((flagged & anomalous).sum())
        metrics[f"{name}_threshold"] = threshold
        metrics[f"{name}_precision"] = 100 * hits / max(int(flagged.sum()), 1)
        metrics[f"{name}_recall"] = 100 * hits / int(anomalous.sum())
        metrics[f"{name}_test_fpr"] = 100 * float(flagged[normal].mean())
    classes = ", ".join(self.ctx.data.class_names[k] for k in ids)
    about = self.ctx.about(
        estimator="per-example scores (higher = more anomalous): recon = "
                  "-log p(x|z) and mse = mean squared error of E[x|z], at the "
                  "posterior mean or code" + (
                      f"; nelbo and nll (importance-sampled -log p(x)) from "
                      f"k={self.num_samples} samples of q(z|x); latent = "
                      "-log N(posterior mean; 0, I); nll_complexity = nll "
                      "- bz2 code length of the input (Serra et al. 2020)"
                      if self.ctx.is_vae
                      else ""),
        units="auroc, auprc (average precision, anomalies positive), "
              "fpr_at_95_tpr, precision, recall, test_fpr: percent; "
              "thresholds: the score's units (nats, or squared error)",
        normal_classes=classes,
        anomalous="every other class of the test split",
        threshold=(f"the {1 - self.target_fpr:.0%} quantile of the score on "
                   "the validation split's normal examples"
                   if valid is not None else
                   "none (no validation split: data.validation_fraction=0)"))
    return common.Output(metrics=metrics, about=about,
                         images=self._figures(test, anomalous, classes))

  def _figures(self, test, anomalous, classes) -> dict[str, np.ndarray]:
    n = len(self.names)
    fig, ax = writers.pyplot().subplots(figsize=(4.5, 4.2), dpi=100)
    from sklearn import metrics  # pylint: disable=g-import-not-at-top
    for name in self.names:
      fpr, tpr, _ = metrics.roc_curve(anomalous, test[name])
      auc = metrics.roc_auc_score(anomalous, test[name])
      ax.plot(fpr, tpr, label=f"{name} (AUROC {100 * auc:.1f})")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate")
    writers.set_title(ax, f"ROC, normal = {classes}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    roc = writers.figure_to_array(fig)
    fig, axes = writers.pyplot().subplots(1, n, figsize=(3.2 * n, 2.8), dpi=100,
                             squeeze=False)
    for ax, name in zip(axes[0], self.names):
      values = test[name]
      lo, hi = np.quantile(values, [0.005, 0.995])
      bins = np.linspace(lo, hi, 50)
      # Filled step outlines: one artist each, not a bar per bin (which
      # took ~2 s per report to draw).
      for label, where in (("normal", ~anomalous), ("anomalous", anomalous)):
        density, _ = np.histogram(values[where], bins, density=True)
        ax.stairs(density, bins, fill=True, alpha=0.6, label=label)
      ax.set(yticks=[])
      writers.set_title(ax, name)
    axes[0][0].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return {"anomaly_roc": roc,
            "anomaly_scores": writers.figure_to_array(fig)}
