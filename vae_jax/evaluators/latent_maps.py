r"""Latent maps: pictures of a trained model's latent space.

Figures, for every model (images written to `images/` by the loop):

  latent_scatter           posterior means E_q[z|x] (VAE) or codes (AE) of
                           the first `num_points` test examples, coloured by
                           label with a legend (grey, no legend, for
                           unlabeled data); a latent of more than 2
                           dimensions is projected to 2-D by PCA of the
                           means (default) or t-SNE (scikit-learn), named in
                           the title.
  latent_manifold          decodings E[x|z] of a grid of z. VAE: the grid is
                           at Gaussian quantiles Phi^-1(linspace(0.05, 0.95))
                           of p(z) = N(0, I) (Kingma and Welling 2014,
                           Fig. 4) over the latent's two dimensions (z_1 on
                           the x axis, as in the scatter), or, for more than
                           two, over the two with the highest mean
                           KL(q(z_d|x) || p(z_d)), the others at 0. AE: over
                           the 1st-99th percentile range of the codes of the
                           two dimensions with the highest code variance,
                           the others at their mean.
  latent_traversals        one row per active unit (Cov_x(E_q[z_d]) > 0.01
                           for a VAE, as `importance.ACTIVE_UNIT_THRESHOLD`;
                           code variance > 0 for an AE), sorted by KL (AE:
                           by variance), at most `max_units`: the unit moves
                           over [-r, r] (r = `traversal_range`; AE: its
                           percentile range) from the first test example's
                           posterior mean or code, the others fixed.
  latent_interpolations    between `num_pairs` pairs of test examples (the
                           originals in the first and last columns): linear
                           in z, and for a VAE (Gaussian prior) also
                           spherical (slerp, Shoemake 1985; White 2016).
  latent_scatter_training  the scatter at every evaluation so far, one panel
                           per step (at most `max_panels`, evenly chosen,
                           first and last kept): the projected points of
                           each step are kept in `latent_maps.npz` in the
                           workdir, so the figure is rebuilt at each
                           evaluation and survives a resumed run.

Metrics: none (the `nll` evaluator reports KL per unit and active units).
"""

import os
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vae_jax import compiler
from vae_jax import files
from vae_jax import importance
from vae_jax import input_pipeline
from vae_jax import sharding
from vae_jax import steps
from vae_jax import writers
from vae_jax.errors import UserError
from vae_jax.evaluators import common

HISTORY = "latent_maps.npz"
PROJECTIONS = ("pca", "tsne")
FIGURES = ("latent_scatter", "latent_manifold", "latent_traversals",
           "latent_interpolations", "latent_scatter_training")


def gaussian_quantile_grid(size: int) -> np.ndarray:
  """`[size]` standard-normal quantiles Phi^-1(linspace(0.05, 0.95, size)),
  the grid of Kingma and Welling (2014, Fig. 4): equal prior mass apart."""
  from scipy import special  # pylint: disable=g-import-not-at-top
  return special.ndtri(np.linspace(0.05, 0.95, size))


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
  """Spherical interpolation between `[Z]` vectors at `[T]` fractions.

  sin((1-t) w) / sin(w) a + sin(t w) / sin(w) b, w the angle between a and
  b (Shoemake 1985; White 2016, "Sampling generative networks"); linear
  where the angle is ~0. Returns `[T, Z]`.
  """
  t = t[:, None]
  cos = np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if np.sin(omega) < 1e-6:
    return (1 - t) * a + t * b
  return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def project(means: np.ndarray, method: str, seed: int = 0
            ) -> tuple[np.ndarray, str]:
  """2-D coordinates `[N, 2]` of `[N, Z]` points, and how they were made.

  Z = 1: (z_1, 0); Z = 2: the points themselves; Z > 2: PCA (an SVD of the
  centred points; axis labels carry the explained variance) or t-SNE
  (scikit-learn, PCA initialisation, `random_state=seed`).
  """
  n, z = means.shape
  if z == 1:
    return np.concatenate([means, np.zeros_like(means)], 1), "z_1 (1-D latent)"
  if z == 2:
    return means, "z_1, z_2"
  if method == "tsne":
    from sklearn import manifold  # pylint: disable=g-import-not-at-top
    coords = manifold.TSNE(n_components=2, init="pca", random_state=seed,
                           perplexity=min(30.0, (n - 1) / 3)).fit_transform(
                               means.astype(np.float64))
    return coords.astype(np.float32), f"t-SNE of the {z}-D means"
  centred = means - means.mean(0)
  _, s, vt = np.linalg.svd(centred, full_matrices=False)
  explained = s**2 / max(np.sum(s**2), 1e-12)
  return (centred @ vt[:2].T,
          f"PCA of the {z}-D means ({100 * explained[:2].sum():.0f}% of "
          "their variance)")


class Evaluator:
  """The latent-space figures of the module docstring, for every model."""

  def __init__(self, entry: ml_collections.ConfigDict,
               ctx: common.Context):
    self.every_steps = entry.every_steps
    self.entry = entry
    self.ctx = ctx
    data, config = ctx.data, ctx.config
    n = min(entry.num_points, len(data.test_x))
    self.x = input_pipeline.to_float(data.test_x[:n])  # [N, *event]
    self.labels = (None if data.test_labels is None
                   else np.asarray(data.test_labels[:n]))
    self.batch_size = min(config.eval.batch_size, n)
    shards, batch = config.data.num_shards, config.training.batch_size
    self.steps_per_epoch = (data.num_train_examples // shards) // max(
        batch // shards, 1)
    model, is_vae = ctx.model, ctx.is_vae

    def encode(params, x):
      code = model.apply(params, x, method="encode")
      if is_vae:
        return code.mean, code.log_var
      return code, jnp.zeros_like(code)

    self._encode = compiler.jit(encode, tree_reductions=ctx.convolutional)
    self._decode = compiler.jit(
        lambda params, z: model.apply(params, z, method="decode").mean(),
        tree_reductions=ctx.convolutional)
    z = config.model.latent_dim
    e = entry
    # Every decoding of a model in one call of one shape: the grid, the
    # traversals (at most max_units rows) and the interpolations.
    self.num_decoded = (e.grid_size**2 + min(e.max_units, z) * e.num_steps
                        + e.num_pairs * 2 * e.num_steps)

  applies = staticmethod(common.images_only)

  @staticmethod
  def validate(entry: ml_collections.ConfigDict,
               config: ml_collections.ConfigDict) -> None:
    del config
    if entry.projection not in PROJECTIONS:
      raise UserError(f"evals.latent_maps.projection must be one of "
                      f"{', '.join(PROJECTIONS)}, got {entry.projection!r}.")
    for name, least in (("num_points", 2), ("grid_size", 2), ("num_steps", 2),
                        ("max_units", 1), ("num_pairs", 0),
                        ("max_panels", 1)):
      if entry[name] < least:
        raise UserError(f"evals.latent_maps.{name} must be >= {least}, got "
                        f"{entry[name]}.")
    if entry.traversal_range <= 0:
      raise UserError("evals.latent_maps.traversal_range must be positive, "
                      f"got {entry.traversal_range}.")

  def compile(self, state: steps.TrainState) -> None:
    params = self.ctx.select(state.params, 0)
    self._encode = self._encode.lower(params, sharding.global_array(
        self.x[:self.batch_size], self.ctx.mesh.replicated)).compile()
    z = self.ctx.config.model.latent_dim
    self._decode = self._decode.lower(params, sharding.global_array(
        np.zeros((self.num_decoded, z), np.float32),
        self.ctx.mesh.replicated)).compile()

  def _encode_all(self, params) -> tuple[np.ndarray, np.ndarray]:
    """(means, log-variances) `[N, Z]` of the points, in fixed-size
    batches (the last one padded)."""
    n, b = len(self.x), self.batch_size
    means, log_vars = [], []
    for start in range(0, n, b):
      batch = self.x[start:start + b]
      if len(batch) < b:
        batch = np.concatenate(
            [batch, np.zeros((b - len(batch), *batch.shape[1:]),
                             batch.dtype)])
      mean, log_var = sharding.to_host(self._encode(
          params, sharding.global_array(batch, self.ctx.mesh.replicated)))
      means.append(np.asarray(mean)[:min(b, n - start)])
      log_vars.append(np.asarray(log_var)[:min(b, n - start)])
    return np.concatenate(means), np.concatenate(log_vars)

  def run(self, state: steps.TrainState) -> list[common.Output]:
    step_numbers = np.asarray(sharding.to_host(state.step)).reshape(-1)
    outputs = []
    for i in range(self.ctx.num_models):
      step = int(step_numbers[i])
      workdir = self.ctx.workdirs[i] if self.ctx.workdirs else None
      outputs.append(self._run_one(self.ctx.select(state.params, i), step,
                                   workdir))
    return outputs

  def _run_one(self, params, step: int, workdir: str | None
               ) -> common.Output:
    e, is_vae = self.entry, self.ctx.is_vae
    means, log_vars = self._encode_all(params)
    if is_vae:  # Mean KL(q(z_d|x) || N(0, 1)) per unit, nats.
      importance_per_unit = np.mean(
          0.5 * (means**2 + np.exp(log_vars) - 1.0 - log_vars), 0)
      active = np.var(means, 0) > importance.ACTIVE_UNIT_THRESHOLD
    else:
      importance_per_unit = np.var(means, 0)
      active = importance_per_unit > 0
    order = np.argsort(-importance_per_unit, kind="stable")
    lo, hi = np.percentile(means, [1, 99], axis=0)  # [Z] each

    coords, how = project(means, e.projection)
    images = {"latent_scatter": self._scatter_figure(coords, how, step)}
    history = self._update_history(workdir, step, coords, how)
    images["latent_scatter_training"] = self._history_figure(history)

    # The decodings: grid, traversals, interpolations.
    z_dim = means.shape[1]
    # A 2-D latent keeps its axes (as in the scatter); a larger one shows
    # its two most informative units.
    dims = np.arange(min(z_dim, 2)) if z_dim <= 2 else order[:2]
    if is_vae:
      axis_values = [gaussian_quantile_grid(e.grid_size)] * 2
      base = np.zeros(z_dim, np.float32)
    else:
      axis_values = [np.linspace(lo[d], hi[d], e.grid_size) for d in dims]
      base = means.mean(0)
    grid = np.tile(base, (e.grid_size**2, 1))
    rows, cols = np.meshgrid(np.arange(e.grid_size), np.arange(e.grid_size),
                             indexing="ij")
    grid[:, dims[0]] = axis_values[0][cols.reshape(-1)]
    if len(dims) > 1:  # Top row: the largest value of the second dimension.
      grid[:, dims[1]] = axis_values[1][::-1][rows.reshape(-1)]
    units = [d for d in order if active[d]][:e.max_units]
    if not units:  # No active unit: show the most informative one anyway.
      units = list(order[:1])
    t = np.linspace(0.0, 1.0, e.num_steps)
    traversals = []
    for d in units:
      values = (np.linspace(-e.traversal_range, e.traversal_range,
                            e.num_steps) if is_vae
                else np.linspace(lo[d], hi[d], e.num_steps))
      row = np.tile(means[0], (e.num_steps, 1))
      row[:, d] = values
      traversals.append(row)
    pairs = [(2 * k, 2 * k + 1) for k in range(e.num_pairs)
             if 2 * k + 1 < len(means)]
    kinds = ("linear", "spherical") if is_vae else ("linear",)
    interpolations, interpolation_labels = [], []
    for a, b in pairs:
      for kind in kinds:
        interpolations.append(
            (1 - t[:, None]) * means[a] + t[:, None] * means[b]
            if kind == "linear" else slerp(means[a], means[b], t))
        interpolation_labels.append(f"{kind} {a}→{b}")
    z_all = np.concatenate([grid, *traversals, *interpolations]).astype(
        np.float32)
    padded = np.zeros((self.num_decoded, z_dim), np.float32)
    padded[:len(z_all)] = z_all
    decoded = np.asarray(sharding.to_host(self._decode(
        params, sharding.global_array(padded, self.ctx.mesh.replicated))))
    decoded = np.clip(decoded, 0.0, 1.0)
    n_grid, n_trav = len(grid), len(traversals) * e.num_steps
    what = ("z at Gaussian quantiles" if is_vae
            else "codes over their 1-99% range")
    dim_names = " and ".join(f"z_{d + 1}" for d in dims)
    score = "KL" if is_vae else "code variance"
    images["latent_manifold"] = _image_figure(
        decoded[:n_grid], e.grid_size,
        f"Decoded manifold at step {step}: {what} of {dim_names}"
        + (f" (top {score}; others "
           f"{'0' if is_vae else 'at their mean'})" if z_dim > 2 else ""),
        col_labels=[f"{v + 0.0:.2g}" for v in np.round(axis_values[0], 6)],
        row_labels=([f"{v + 0.0:.2g}" for v in np.round(axis_values[-1][::-1], 6)]
                    if len(dims) > 1 else None))
    images["latent_traversals"] = _image_figure(
        decoded[n_grid:n_grid + n_trav], e.num_steps,
        f"Traversals at step {step}: one unit over "
        + (f"[-{e.traversal_range:g}, {e.traversal_range:g}]" if is_vae
           else "its 1-99% range")
        + f" from test example 0's {'posterior mean' if is_vae else 'code'}",
        row_labels=[f"z_{d + 1} ({score} {importance_per_unit[d]:.2g})"
                    for d in units],
        col_labels=([f"{v + 0.0:.2g}" for v in np.round(np.linspace(
            -e.traversal_range, e.traversal_range, e.num_steps), 6)]
                    if is_vae else None))
    if interpolations:
      inner = decoded[n_grid + n_trav:len(z_all)].reshape(
          len(interpolations), e.num_steps, *decoded.shape[1:])
      ends = np.clip(self.x, 0.0, 1.0)
      rows = []
      for r, (a, b) in enumerate(p for p in pairs for _ in kinds):
        rows.append(np.concatenate([ends[a][None], inner[r], ends[b][None]]))
      images["latent_interpolations"] = _image_figure(
          np.concatenate(rows), e.num_steps + 2,
          f"Interpolations at step {step} between test examples (originals "
          "at the ends)", row_labels=interpolation_labels)
    return common.Output(metrics={}, images=images)

  def _scatter_figure(self, coords, how, step) -> np.ndarray:
    legend = self.labels is not None and len(self.ctx.data.class_names) <= 20
    longest = max((len(n) for n in self.ctx.data.class_names), default=0)
    # Fixed margins (inches) rather than tight_layout, which draws the
    # figure (every point) once more to measure it; the legend, if any, in
    # a right margin as wide as its longest class name.
    right = 0.15 + (0.45 + 0.06 * min(longest, 30) if legend else 0.0)
    width, height = 6.0 + (right - 0.15), 5.0
    fig, ax = writers.pyplot().subplots(figsize=(width, height), dpi=100)
    title = textwrap.wrap(
        f"Test {'posterior means' if self.ctx.is_vae else 'codes'} at "
        f"{self._when(step)}: {how}", 80)
    top = 0.2 + 0.17 * len(title)
    fig.subplots_adjust(left=0.6 / width, right=1 - right / width,
                        bottom=0.45 / height, top=1 - top / height)
    self._scatter(ax, coords)
    writers.set_title(ax, "\n".join(title), fontsize=9)
    if legend:
      ax.legend(markerscale=3, fontsize=7, loc="center left",
                bbox_to_anchor=(1.0, 0.5), frameon=False)
    return writers.figure_to_array(fig)

  def _scatter(self, ax, coords) -> None:
    n = len(coords)
    size = max(1.0, min(8.0, 8000.0 / n))
    if self.labels is None:
      ax.scatter(coords[:, 0], coords[:, 1], s=size, c="0.3", alpha=0.5,
                 linewidths=0)
      return
    names = self.ctx.data.class_names
    cmap = writers.pyplot().get_cmap("tab10" if len(names) <= 10 else "tab20")
    labels = self.labels[:n]
    for k, name in enumerate(names):
      keep = labels == k
      if keep.any():
        ax.scatter(coords[keep, 0], coords[keep, 1], s=size,
                   color=cmap(k % cmap.N), alpha=0.6, linewidths=0,
                   label=name)

  def _when(self, step: int) -> str:
    if self.steps_per_epoch > 0:
      return f"step {step} (epoch {step / self.steps_per_epoch:.3g})"
    return f"step {step}"

  def _update_history(self, workdir, step, coords, how
                      ) -> list[tuple[int, np.ndarray, str]]:
    """[(step, coords [N, 2], how)] of the evaluations so far, this one
    included; saved to workdir/latent_maps.npz (process 0) when known.

    Steps at or after `step` (work a resumed run redoes) are replaced.
    """
    history = []
    path = workdir and os.path.join(workdir, HISTORY)
    if path and os.path.exists(path):
      with np.load(path) as f:
        for s, h in zip(f["steps"], f["how"]):
          if int(s) < step and f[f"coords_{int(s)}"].shape == coords.shape:
            history.append((int(s), f[f"coords_{int(s)}"].astype(np.float32),
                            str(h)))
    history.append((step, coords.astype(np.float32), how))
    if path and jax.process_index() == 0:
      arrays = {f"coords_{s}": c.astype(np.float16) for s, c, _ in history}
      files.save_npz(path, steps=np.array([s for s, _, _ in history]),
                     how=np.array([h for _, _, h in history]), **arrays)
    return history

  def _history_figure(self, history) -> np.ndarray:
    m = self.entry.max_panels
    if len(history) > m:
      keep = np.unique(np.round(np.linspace(0, len(history) - 1, m)).astype(
          int))
      history = [history[k] for k in keep]
    n = len(history)
    cols = min(n, 5)
    rows = -(-n // cols)
    # Fixed margins (inches) rather than tight_layout, which draws the
    # figure once more to measure it: this figure is redrawn, one panel
    # more, at every evaluation.
    width = 3.2 * cols
    title = textwrap.wrap(
        f"Test {'posterior means' if self.ctx.is_vae else 'codes'} across "
        f"training: {history[-1][2]}", int(width * 12))
    legend = self.labels is not None and len(self.ctx.data.class_names) <= 20
    ncol = min(len(self.ctx.data.class_names), max(1, int(width / 0.6)))
    legend_rows = -(-len(self.ctx.data.class_names) // ncol) if legend else 0
    top, bottom = 0.35 + 0.18 * len(title), 0.35 + 0.2 * legend_rows
    height = 3.0 * rows + top + bottom
    fig, axes = writers.pyplot().subplots(
        rows, cols, figsize=(width, height), dpi=90, squeeze=False)
    fig.subplots_adjust(left=0.45 / width, right=1 - 0.15 / width,
                        bottom=bottom / height, top=1 - top / height,
                        wspace=0.25, hspace=0.35 * 3.0 / (3.0 - 0.35))
    for ax, (step, coords, _) in zip(axes.reshape(-1), history):
      self._scatter(ax, coords)
      writers.set_title(ax, self._when(step), fontsize=9)
      ax.tick_params(labelsize=6)
    for ax in axes.reshape(-1)[n:]:
      ax.axis("off")
    fig.suptitle("\n".join(title), fontsize=10, y=1 - 0.1 / height,
                 va="top")
    if legend:
      handles, names = axes[0][0].get_legend_handles_labels()
      fig.legend(handles, names, loc="lower center", ncol=ncol, fontsize=7,
                 markerscale=3, frameon=False)
    return writers.figure_to_array(fig)


def _image_figure(images: np.ndarray, cols: int, title: str,
                  row_labels: list[str] | None = None,
                  col_labels: list[str] | None = None) -> np.ndarray:
  """`[N, H, W, C]` images in [0, 1] tiled `cols` wide, with a title and
  optional row and column labels, as an `[H', W', 3]` figure image."""
  grid = writers.image_grid(images, cols)
  rows = -(-len(images) // cols)
  h, w = images.shape[1:3]
  cell = 0.5 if max(h, w) <= 16 else 0.45
  fig, ax = writers.pyplot().subplots(
      figsize=(max(4.0, cols * cell + (1.6 if row_labels else 0.4)),
               rows * cell * h / w + 0.9), dpi=100)
  if grid.shape[-1] == 1:
    ax.imshow(grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0,
              interpolation="nearest")
  else:
    ax.imshow(np.clip(grid, 0.0, 1.0), interpolation="nearest")
  ax.set_yticks([1 + r * (h + 1) + h / 2 for r in range(len(row_labels))]
                if row_labels else [])
  if row_labels:
    ax.set_yticklabels(row_labels, fontsize=7)
  ax.set_xticks([1 + c * (w + 1) + w / 2 for c in range(len(col_labels))]
                if col_labels else [])
  if col_labels:
    ax.set_xticklabels(col_labels, fontsize=6, rotation=90)
  writers.set_title(ax, title, fontsize=8)
  fig.tight_layout()
  return writers.figure_to_array(fig)
