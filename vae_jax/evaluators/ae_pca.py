r"""AE vs PCA: the model's reconstruction error beside PCA's at its code size.

PCA with k = `model.latent_dim` components is fitted on the training
images as the model sees them (pixels / 255 in [0, 1], binarized if the
run binarizes statically; the mean is subtracted and added back), by
scikit-learn (`PCA(svd_solver="covariance_eigh")`: an exact eigendecomposition
of the D x D covariance). On the whole test split, per image, in pixels in
[0, 1] with no clipping:

  sse   the squared error summed over the D pixels, ||x - x_hat||^2 (Hinton
        and Salakhutdinov 2006, Fig. 2B: "squared error per image"; their
        30-D PCA gives 13.87 on MNIST);
  psnr  10 log10(1 / mse) dB, mse = sse / D (`losses.psnr`).

Metrics are means over the test images: `sse`, `psnr` of the model's
reconstruction E[x|z] at the posterior mean (VAE) or the code (AE);
`pca_sse`, `pca_psnr` of PCA's; `sse_ratio` = sse / pca_sse; and
`principal_angles_deg`, the principal angles (scipy `subspace_angles`)
between PCA's k components and the top k principal directions of the
model's centred test reconstructions: all ~0 when the model reconstructs
in PCA's subspace, as a linear autoencoder trained with squared error
does at its optimum (Baldi and Hornik 1989). The PCA is fitted on this
process's training shards (all of them in a one-process run), once, and
saved in each model's workdir as `ae_pca.npz` (mean, components, number of
training images); `--mode=eval` and the Python API, which read no training
example, score against that saved fit.
"""

import dataclasses
import os

from absl import logging
import jax
import ml_collections
import numpy as np

from vae_jax import compiler
from vae_jax import files
from vae_jax import input_pipeline
from vae_jax import sharding
from vae_jax import steps
from vae_jax.evaluators import common


FILE = "ae_pca.npz"


@dataclasses.dataclass(frozen=True)
class Pca:
  """A fitted PCA: `mean_` `[D]`, orthonormal `components_` `[k, D]` (the
  names of scikit-learn's attributes), and the number of rows it was fitted
  on."""
  mean_: np.ndarray
  components_: np.ndarray
  n_samples_: int

  @property
  def n_components_(self) -> int:
    return len(self.components_)

  def save(self, path: str) -> None:
    """Writes the fit to `path` (.npz), atomically."""
    files.save_npz(path, mean=self.mean_, components=self.components_,
                   n_samples=self.n_samples_)

  @classmethod
  def load(cls, path: str) -> "Pca":
    with np.load(path) as f:
      return cls(f["mean"], f["components"], int(f["n_samples"]))


def fit_pca(train_x: np.ndarray, k: int) -> Pca:
  """PCA of `[N, D]` rows with k components (at most D, N), by scikit-learn.

  Exact: the eigendecomposition of the D x D covariance, in float64.
  """
  from sklearn import decomposition  # pylint: disable=g-import-not-at-top
  k = min(k, *train_x.shape)
  fit = decomposition.PCA(n_components=k, svd_solver="covariance_eigh").fit(
      np.asarray(train_x, np.float64))
  return Pca(fit.mean_, fit.components_, int(fit.n_samples_))


def reconstruction_errors(x: np.ndarray, x_hat: np.ndarray
                          ) -> dict[str, np.ndarray]:
  """Per-example `sse` (sum over dims of (x - x_hat)^2) and `psnr` (dB, of
  the mean over dims, floored as `losses.psnr`), `[N]` each, for `[N, ...]`
  arrays in [0, 1]."""
  diff = np.asarray(x, np.float64) - np.asarray(x_hat, np.float64)
  sse = np.sum(np.square(diff.reshape(len(x), -1)), axis=1)
  mse = sse / diff[0].size
  return {"sse": sse, "psnr": 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))}


def pca_reconstruct(pca: Pca, x: np.ndarray) -> np.ndarray:
  """PCA's reconstruction of `[N, D]` rows: mean + (x - mean) C^T C for the
  `[k, D]` components C (scikit-learn's transform + inverse_transform,
  unwhitened), unclipped."""
  centred = np.asarray(x, np.float64) - pca.mean_
  return centred @ pca.components_.T @ pca.components_ + pca.mean_


def principal_angles_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Principal angles in degrees between the row spaces of `[k, D]` and
  `[m, D]` matrices (scipy `subspace_angles`), largest first."""
  from scipy import linalg  # pylint: disable=g-import-not-at-top
  return np.degrees(linalg.subspace_angles(np.asarray(a, np.float64).T,
                                           np.asarray(b, np.float64).T))


class Evaluator:
  """The model's and PCA's reconstruction error on the test set."""

  def __init__(self, entry: ml_collections.ConfigDict,
               ctx: common.Context):
    self.every_steps = entry.every_steps
    self.ctx = ctx
    self.x = input_pipeline.to_float(ctx.data.test_x)  # [N, *event]
    flat = self.x.reshape(len(self.x), -1)
    self.pca = self._fit_or_load(ctx)
    self.pca_errors = reconstruction_errors(flat,
                                            pca_reconstruct(self.pca, flat))
    self.batch_size = min(ctx.config.eval.batch_size, len(self.x))
    model = ctx.model
    self._reconstruct = compiler.jit(
        lambda params, x: model.apply(params, x, method="reconstruct"),
        tree_reductions=ctx.convolutional)

  @staticmethod
  def _saved(ctx: common.Context) -> str | None:
    """The saved fit of the first model's workdir, if there is one."""
    if not ctx.workdirs:
      return None
    path = os.path.join(ctx.workdirs[0], FILE)
    return path if os.path.exists(path) else None

  @staticmethod
  def _has_train(ctx: common.Context) -> bool:
    return sum(len(s) for s in ctx.data.train_shards) > 0

  def _fit_or_load(self, ctx: common.Context) -> Pca:
    """Fits PCA on the training images when the run has them (training;
    `run` saves it in the workdirs, which exist by then), else loads the
    fit saved then."""
    if not self._has_train(ctx):
      self._unsaved = False
      return Pca.load(self._saved(ctx))
    self._unsaved = jax.process_index() == 0 and bool(ctx.workdirs)
    train_x = input_pipeline.to_float(np.concatenate(ctx.data.train_shards))
    return fit_pca(train_x.reshape(len(train_x), -1),
                   ctx.config.model.latent_dim)

  @classmethod
  def applies(cls, ctx: common.Context) -> bool:
    """Images, with training examples to fit PCA on, or (in --mode=eval and
    the Python API, which read no training example) the fit that training
    saved in the workdir."""
    if ctx.data.kind != "image":
      return False
    if cls._has_train(ctx) or cls._saved(ctx):
      return True
    logging.info("evals.ae_pca: no training images and no %s in the workdir "
                 "(a run trained before it was saved); skipped.", FILE)
    return False

  @staticmethod
  def validate(entry: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict) -> None:
    del entry, config  # Nothing beyond every_steps.

  def compile(self, state: steps.TrainState) -> None:
    self._reconstruct = self._reconstruct.lower(
        self.ctx.select(state.params, 0), sharding.global_array(
            self.x[:self.batch_size], self.ctx.mesh.replicated)).compile()

  def _reconstruct_all(self, params) -> np.ndarray:
    n, b = len(self.x), self.batch_size
    out = []
    for start in range(0, n, b):
      batch = self.x[start:start + b]
      m = len(batch)
      if m < b:  # One compiled shape: pad the last batch.
        batch = np.concatenate([batch, np.zeros((b - m, *batch.shape[1:]),
                                                batch.dtype)])
      out.append(np.asarray(sharding.to_host(self._reconstruct(
          params, sharding.global_array(batch,
                                        self.ctx.mesh.replicated))))[:m])
    return np.concatenate(out)

  def run(self, state: steps.TrainState) -> list[common.Output]:
    if self._unsaved:
      for workdir in self.ctx.workdirs:
        self.pca.save(os.path.join(workdir, FILE))
      self._unsaved = False
    outputs = []
    k = self.pca.n_components_
    for i in range(self.ctx.num_models):
      x_hat = self._reconstruct_all(self.ctx.select(state.params, i))
      flat = x_hat.reshape(len(x_hat), -1).astype(np.float64)
      errors = reconstruction_errors(self.x, x_hat)
      # The model's reconstructions' own top-k principal directions.
      _, _, vt = np.linalg.svd(flat - flat.mean(0), full_matrices=False)
      metrics = {
          "sse": float(np.mean(errors["sse"])),
          "psnr": float(np.mean(errors["psnr"])),
          "pca_sse": float(np.mean(self.pca_errors["sse"])),
          "pca_psnr": float(np.mean(self.pca_errors["psnr"])),
          "principal_angles_deg": principal_angles_deg(
              self.pca.components_, vt[:k]).tolist(),
      }
      metrics["sse_ratio"] = metrics["sse"] / metrics["pca_sse"]
      outputs.append(common.Output(metrics=metrics, about=self.ctx.about(
          estimator=f"PCA with k={k} components (scikit-learn, exact "
                    "covariance eigendecomposition) fitted on the "
                    f"{self.pca.n_samples_} "
                    "training images as the model sees them; the model's "
                    "E[x|z] at the posterior mean or code; means over the "
                    "test images",
          units="sse: squared error per image summed over pixels in [0, 1] "
                "(unclipped); psnr: dB of the per-image mean squared error; "
                "principal_angles_deg: degrees between PCA's subspace and "
                "the top-k principal directions of the model's "
                "reconstructions",
          pca_components=int(k))))
    return outputs
