r"""Exact evaluation: importance-sampled log-likelihood and latent diagnostics.

Scores the latest checkpoint of a workdir on its test set:

  python -m vae_jax.evaluate --workdir=DIR [--num_importance_samples=5000] \
      [--chunk_size=100] [--batch_size=500] [--seed=0]

and writes DIR/eval.json. The estimate of log p(x) is the importance-sampled
one of Burda et al. (2015), with q(z|x) as the proposal:

  log p(x) ~= log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),  z_k ~ q(z|x),

a stochastic lower bound (the IWAE bound) that tightens as K grows; K = 5000
is the literature protocol for MNIST.

Memory does not grow with K: the K samples are drawn and scored in chunks of
`chunk_size` by `lax.scan`, keeping a running log-sum-exp (running maximum
and a sum rescaled to it), so a batch needs O(chunk_size * batch) decoder
activations whatever K is.

Randomness. Sample j of example n uses the key
`fold_in(fold_in(rng, n), j)`, with n the example's index in the evaluated
set. Every latent sample is therefore fixed by (rng, n, j) alone: the
estimate is exactly the same (to float rounding, since only the order of the
additions changes) for any chunk size, batch size or padding, which the
tests check. The price is one extra Threefry hash per (example, sample)
pair: on a 2-core CPU, drawing a chunk of 100 x 500 x 50 normals this way
takes 37 ms against 25 ms for one block from one key, next to about 0.5 s
for decoding that chunk with the 784-200-200-50 MLP, so about 2% of the
evaluation. One block per chunk from `fold_in(rng, chunk)` would make the
estimate depend on the chunk size, equal only in distribution. The
single-sample ELBO reported next to it uses sample j = 0, one of the K
importance samples.
"""

import functools
import json
import logging as std_logging
import math
import os
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import input_pipeline
from vae_jax import losses
from vae_jax import models
from vae_jax import objectives
from vae_jax import trained
from vae_jax import writers
from vae_jax.errors import UserError

# The shared per-example code: the IWAE objective trains on the same weights.
log_importance_weights = objectives.log_importance_weights
iwae_bound = objectives.iwae_bound

# A unit is active when Cov_x(E_q[z_d | x]) exceeds this (Burda et al., 2015).
ACTIVE_UNIT_THRESHOLD = 0.01
DEFAULT_NUM_IMPORTANCE_SAMPLES = 5000
DEFAULT_CHUNK_SIZE = 100
# Keeps the importance samples' stream apart from the training loop's and the
# periodic evaluation's (`train._eval_key` folds in 1 << 20).
_IMPORTANCE_STREAM = 1 << 21


# ----------------------------------------------------------------------------
# Pure functions.


def _example_keys(rng: jax.Array, example_ids: jax.Array) -> jax.Array:
  """`[B]` keys, one per example: fold_in(rng, n)."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, example_ids)


def _draw_eps(example_keys: jax.Array, sample_ids: jax.Array, latent_dim: int,
              dtype) -> jax.Array:
  """`[C, B, Z]` standard normals; [j, n] from fold_in(example_keys[n], j)."""

  def one(key, j):
    return jax.random.normal(jax.random.fold_in(key, j), (latent_dim,), dtype)

  return jax.vmap(lambda j: jax.vmap(lambda k: one(k, j))(example_keys))(
      sample_ids)


def _init_carry(batch_size: int, dtype) -> dict[str, jax.Array]:
  return {"max": jnp.full((batch_size,), -jnp.inf, dtype),
          "sum": jnp.zeros((batch_size,), dtype),
          "sum_log_w": jnp.zeros((batch_size,), dtype)}


def _chunk_update(model: models.VAE, params: Any, x: jax.Array,
                  posterior: models.Posterior, example_keys: jax.Array,
                  carry: dict[str, jax.Array], chunk_index: jax.Array, *,
                  num_samples: int, chunk_size: int) -> dict[str, jax.Array]:
  """Adds samples [i C, (i + 1) C) to the running log-sum-exp of the weights.

  The carry holds per example m = max_j log w_j so far, s = sum_j
  exp(log w_j - m) and sum_j log w_j. Samples with index >= K (the tail of
  the last chunk when C does not divide K) get log w = -inf and count for
  nothing.
  """
  sample_ids = chunk_index * chunk_size + jnp.arange(chunk_size)
  valid = (sample_ids < num_samples)[:, None]  # [C, 1]
  eps = _draw_eps(example_keys, sample_ids, posterior.mean.shape[-1],
                  posterior.mean.dtype)
  z = posterior.mean + jnp.exp(0.5 * posterior.log_var) * eps  # [C, B, Z]
  log_w = objectives.importance_terms(model, params, x, posterior,
                                      z).log_weights  # [C, B]
  log_w = jnp.where(valid, log_w, -jnp.inf)
  new_max = jnp.maximum(carry["max"], jnp.max(log_w, axis=0))
  # Guards exp(-inf - -inf) should every weight so far be zero.
  shift = jnp.where(jnp.isfinite(new_max), new_max, 0.0)
  total = (carry["sum"] * jnp.exp(carry["max"] - shift)
           + jnp.sum(jnp.exp(log_w - shift), axis=0))
  return {"max": new_max, "sum": total,
          "sum_log_w": carry["sum_log_w"]
                       + jnp.sum(jnp.where(valid, log_w, 0.0), axis=0)}


def _importance_scan(model: models.VAE, params: Any, x: jax.Array,
                     posterior: models.Posterior, example_keys: jax.Array, *,
                     num_samples: int,
                     chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """(log (1/K) sum_k w_k, (1/K) sum_k log w_k), each `[B]`."""
  _check_sizes(num_samples, chunk_size)
  chunk_size = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk_size)
  body = functools.partial(_chunk_update, model, params, x, posterior,
                           example_keys, num_samples=num_samples,
                           chunk_size=chunk_size)
  carry, _ = jax.lax.scan(lambda c, i: (body(c, i), None),
                          _init_carry(x.shape[0], posterior.mean.dtype),
                          jnp.arange(num_chunks))
  log_px = carry["max"] + jnp.log(carry["sum"]) - math.log(num_samples)
  return log_px, carry["sum_log_w"] / num_samples


def _check_sizes(num_samples: int, chunk_size: int) -> None:
  if num_samples < 1:
    raise UserError(f"The number of importance samples must be >= 1, got "
                    f"{num_samples}.")
  if chunk_size < 1:
    raise UserError(f"The importance chunk size must be >= 1, got "
                    f"{chunk_size}.")


def importance_sampled_log_likelihood(
    model: models.VAE, params: Any, x: jax.Array, rng: jax.Array,
    num_samples: int, chunk_size: int,
    example_ids: jax.Array | None = None) -> jax.Array:
  """Importance-sampled estimate of log p(x) with q(z|x) as proposal.

  log p(x) ~= logsumexp_k(log w_k) - log K, the K-sample IWAE bound, computed
  in chunks of `chunk_size` samples with a running log-sum-exp so memory is
  O(chunk_size * B) for any K. Sample j of example n is drawn from
  `fold_in(fold_in(rng, example_ids[n]), j)`, so the result does not depend
  on `chunk_size` (up to float rounding) nor on how examples are batched.

  Args:
    model: a VAE.
    params: its parameters.
    x: `[B, *event]` model inputs.
    rng: a PRNG key.
    num_samples: K >= 1, static.
    chunk_size: samples scored at once, static; `min(chunk_size, K)` is used,
      and a chunk size dividing K wastes no compute on the last chunk.
    example_ids: `[B]` int, the examples' indices in the evaluated set;
      default `arange(B)`.

  Returns:
    `[B]` estimates of log p(x) in nats (biased low, by less as K grows).
  """
  if example_ids is None:
    example_ids = jnp.arange(x.shape[0])
  posterior = model.apply(params, x, method="encode")
  log_px, _ = _importance_scan(model, params, x, posterior,
                               _example_keys(rng, example_ids),
                               num_samples=num_samples, chunk_size=chunk_size)
  return log_px


def evaluate_batch(model: models.VAE, params: Any, images: jax.Array,
                   mask: jax.Array, rng: jax.Array, first_index: jax.Array, *,
                   num_samples: int, chunk_size: int) -> dict[str, jax.Array]:
  """Per-example likelihood terms and latent sums for one padded batch.

  Args:
    model: a VAE.
    params: its parameters.
    images: `[EB, *event]` uint8, already binarized if the run is.
    mask: `[EB]`, 1 for real examples and 0 for padding.
    rng: the evaluation key (the same for every batch).
    first_index: `[]` int, the index of `images[0]` in the evaluated set.
    num_samples: K, static.
    chunk_size: static, see `importance_sampled_log_likelihood`.

  Returns:
    Per-example `[EB]` arrays, zero at padding: `log_px` (IS estimate),
    `nelbo_k` (-(1/K) sum_k log w_k: the -ELBO from the same K samples, with
    a Monte Carlo KL), `recon` (-log p(x|z_0)), `kl` (closed form) and
    `nelbo` (recon + kl, the single-sample -ELBO the train loop reports).
    Masked sums over the batch, `[Z]`: `kl_per_dim`, `mean` and `mean_sq`
    (of the posterior means, for active units).
  """
  x = input_pipeline.preprocess(images, None, "none")
  example_ids = first_index + jnp.arange(x.shape[0])
  example_keys = _example_keys(rng, example_ids)
  posterior = model.apply(params, x, method="encode")
  log_px, mean_log_w = _importance_scan(
      model, params, x, posterior, example_keys, num_samples=num_samples,
      chunk_size=chunk_size)

  eps_0 = _draw_eps(example_keys, jnp.zeros((1,), jnp.int32),
                    posterior.mean.shape[-1], posterior.mean.dtype)
  z_0 = posterior.mean + jnp.exp(0.5 * posterior.log_var) * eps_0[0]
  recon = -model.apply(params, z_0, method="decode").log_prob(x)
  kl_per_dim = losses.kl_to_std_normal(posterior.mean, posterior.log_var)
  kl = jnp.sum(kl_per_dim, axis=-1)

  keep = mask > 0
  per_example = {"log_px": log_px, "nelbo_k": -mean_log_w, "recon": recon,
                 "kl": kl, "nelbo": recon + kl}
  # where, not a product: padding must not turn a NaN or inf into the sums.
  out = {k: jnp.where(keep, v, 0.0) for k, v in per_example.items()}
  weights = keep[:, None]
  out["kl_per_dim"] = jnp.sum(jnp.where(weights, kl_per_dim, 0.0), axis=0)
  out["mean"] = jnp.sum(jnp.where(weights, posterior.mean, 0.0), axis=0)
  out["mean_sq"] = jnp.sum(
      jnp.where(weights, jnp.square(posterior.mean), 0.0), axis=0)
  return out


def evaluate_dataset(model: models.VAE, params: Any, images: jax.Array,
                     mask: jax.Array, rng: jax.Array, num_samples: int,
                     chunk_size: int) -> dict[str, jax.Array]:
  """`evaluate_batch` over `[NB, EB, ...]` padded batches, on device.

  Batch i holds examples [i EB, (i + 1) EB), so every example gets the same
  latent samples as in `evaluate_batch` calls from a host loop. Reduce the
  result with `summarize`.

  Args:
    model: a VAE.
    params: its parameters.
    images: `[NB, EB, *event]` uint8 (`input_pipeline.eval_batches`).
    mask: `[NB, EB]`, 1 for real examples.
    rng: the evaluation key.
    num_samples: K, static.
    chunk_size: static.

  Returns:
    `evaluate_batch`'s outputs stacked: `[NB, EB]` per example, `[NB, Z]`
    sums.
  """
  batch_size = images.shape[1]
  step = functools.partial(evaluate_batch, model, params,
                           num_samples=num_samples, chunk_size=chunk_size)
  return jax.lax.map(
      lambda a: step(a[1], a[2], rng, a[0] * batch_size),
      (jnp.arange(images.shape[0]), images, mask))


def summarize(outputs: dict[str, Any], mask: Any,
              num_dims: int) -> dict[str, Any]:
  """Test-set metrics from `evaluate_dataset` outputs, in float64 on the host.

  Args:
    outputs: per-example arrays `[NB, EB]` and per-batch sums `[NB, Z]`.
    mask: `[NB, EB]`, 1 for real examples.
    num_dims: pixels per example, for bits/dim.

  Returns:
    Means over the N real examples and standard errors (sample std over
    examples / sqrt(N): the spread of the test set, which dominates the
    Monte Carlo error of the estimator): `nll` = -log p(x), `nelbo`,
    `recon`, `kl` (single sample), `nelbo_k` (-ELBO from the K samples),
    `elbo_gap` = nelbo_k - nll (>= 0 in expectation; estimates
    KL(q(z|x) || p(z|x)) less the remaining IWAE bias), bits/dim, and the
    latent diagnostics: `kl_per_dim`, `posterior_mean_variance`
    (Cov_x(E_q[z_d|x])) and `active_units`.
  """
  outputs = jax.device_get(outputs)
  keep = np.asarray(mask) > 0
  n = int(keep.sum())

  def per_example(name):
    return np.asarray(outputs[name], np.float64)[keep]

  def total(name):
    return np.sum(np.asarray(outputs[name], np.float64), axis=0)

  nll = -per_example("log_px")
  m = {"num_examples": n,
       "nll": float(nll.mean()),
       "nll_stderr": float(nll.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0}
  for name in ("nelbo", "nelbo_k", "recon", "kl"):
    v = per_example(name)
    m[name] = float(v.mean())
    m[f"{name}_stderr"] = (float(v.std(ddof=1) / math.sqrt(n)) if n > 1
                           else 0.0)
  m["elbo_gap"] = m["nelbo_k"] - m["nll"]
  m["nll_bits_per_dim"] = float(losses.bits_per_dim(m["nll"], num_dims))
  m["nelbo_bits_per_dim"] = float(losses.bits_per_dim(m["nelbo"], num_dims))
  mean = total("mean") / n
  variance = np.maximum(total("mean_sq") / n - np.square(mean), 0.0)
  m["kl_per_dim"] = (total("kl_per_dim") / n).tolist()
  m["posterior_mean_variance"] = variance.tolist()
  m["active_units"] = int(np.sum(variance > ACTIVE_UNIT_THRESHOLD))
  m["active_unit_threshold"] = ACTIVE_UNIT_THRESHOLD
  m["latent_dim"] = len(variance)
  return m


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # Older jax: one dict per module.
    cost = cost[0]
  return float(cost["flops"])


def batch_flops(model: models.VAE, params: Any, batch_size: int,
                event_shape: tuple[int, ...], *, num_samples: int,
                chunk_size: int, compiled_batch=None) -> float:
  """XLA's FLOP count of one `evaluate_batch` call on one device.

  XLA's cost analysis counts the body of a while loop once, whatever its trip
  count, so the count of the compiled batch function is completed with
  (chunks - 1) times that of one chunk update compiled on its own. Both are
  compiled from abstract shapes without sharding, so the count is that of
  the whole batch. `compiled_batch`, if given, is `evaluate_batch` compiled
  for one device with these shapes (saves a compile).
  """
  images = jax.ShapeDtypeStruct((batch_size, *event_shape), jnp.uint8)
  x = jax.ShapeDtypeStruct((batch_size, *event_shape), jnp.float32)
  rng = jax.eval_shape(lambda: jax.random.key(0))
  params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                        params)
  if compiled_batch is None:
    compiled_batch = jax.jit(functools.partial(
        evaluate_batch, model, num_samples=num_samples,
        chunk_size=chunk_size)).lower(
            params, images, jax.ShapeDtypeStruct((batch_size,), jnp.float32),
            rng, jax.ShapeDtypeStruct((), jnp.int32)).compile()
  chunk = min(chunk_size, num_samples)
  num_chunks = -(-num_samples // chunk)
  posterior = jax.eval_shape(
      lambda p, v: model.apply(p, v, method="encode"), params, x)
  keys = jax.eval_shape(
      lambda r: _example_keys(r, jnp.arange(batch_size)), rng)
  carry = jax.eval_shape(
      lambda: _init_carry(batch_size, posterior.mean.dtype))
  update = jax.jit(functools.partial(
      _chunk_update, model, num_samples=num_samples, chunk_size=chunk))
  compiled_chunk = update.lower(params, x, posterior, keys, carry,
                                jax.ShapeDtypeStruct((), jnp.int32)).compile()
  return _flops(compiled_batch) + (num_chunks - 1) * _flops(compiled_chunk)


# ----------------------------------------------------------------------------
# Workdirs.


def evaluate_workdir_nll(workdir: str,
                         num_importance_samples: int | None = None,
                         chunk_size: int | None = None,
                         batch_size: int | None = None,
                         seed: int | None = None) -> dict[str, Any]:
  """Scores the latest checkpoint of `workdir`; writes `workdir/eval.json`.

  Args:
    workdir: a training run's workdir (config.json and checkpoints).
    num_importance_samples: K; default the config's
      `eval.num_importance_samples`, else 5000.
    chunk_size: samples scored at once; default the config's
      `eval.importance_chunk_size`, else 100.
    batch_size: examples per device call; default `eval.batch_size`.
    seed: the importance samples' seed; default the config's `seed`.

  Returns:
    What eval.json holds: the metrics of `summarize` plus the settings, the
    wall time and the FLOP count.
  """
  start_time = time.time()
  if not os.path.isdir(workdir):
    raise UserError(f"Workdir {workdir} does not exist.")
  config = trained.load_config(workdir)
  if not models.is_vae(config.model):
    raise UserError(f"Workdir {workdir} holds an autoencoder "
                    f"({config.model.name}): it has no likelihood to "
                    "importance-sample; its test metrics are in results.json.")
  k = (num_importance_samples if num_importance_samples is not None else
       config.eval.get("num_importance_samples",
                       DEFAULT_NUM_IMPORTANCE_SAMPLES))
  chunk = (chunk_size if chunk_size is not None else
           config.eval.get("importance_chunk_size", DEFAULT_CHUNK_SIZE))
  batch_size = batch_size if batch_size is not None else config.eval.batch_size
  seed = seed if seed is not None else config.seed
  _check_sizes(k, chunk)
  if batch_size < 1:
    raise UserError(f"The batch size must be >= 1, got {batch_size}.")
  num_devices = jax.device_count()
  if batch_size % num_devices:
    raise UserError(f"Batch size {batch_size} does not divide across the "
                    f"{num_devices} devices; use a multiple of {num_devices}.")
  models.validate_config(config.model)
  manager, step = trained.latest_checkpoint(workdir, config)

  data = input_pipeline.load(config.data)
  model = models.create_model(config.model, data.event_shape)
  params = trained.restore_params(manager, step, model, data.event_shape)
  images, mask = input_pipeline.eval_batches(data.test_images, batch_size)
  num_batches = images.shape[0]

  mesh = jax.make_mesh((num_devices,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  replicated = jax.NamedSharding(mesh, jax.P())
  batch_sharding = jax.NamedSharding(mesh, jax.P("data"))
  params = jax.device_put(params, replicated)
  rng = jax.device_put(
      jax.random.fold_in(jax.random.key(seed), _IMPORTANCE_STREAM), replicated)
  index = lambda i: jax.device_put(jnp.asarray(i * batch_size, jnp.int32),
                                   replicated)
  batch = lambda i: jax.device_put((images[i], mask[i]), batch_sharding)

  compile_start = time.time()
  first_images, first_mask = batch(0)
  evaluate = jax.jit(functools.partial(
      evaluate_batch, model, num_samples=k, chunk_size=chunk)).lower(
          params, first_images, first_mask, rng, index(0)).compile()
  flops = num_batches * batch_flops(
      model, params, batch_size, data.event_shape, num_samples=k,
      chunk_size=chunk,
      compiled_batch=evaluate if num_devices == 1 else None)
  compile_time = time.time() - compile_start
  logging.info("Evaluating step %d of %s: %d examples in %d batches of %d, "
               "K=%d importance samples in chunks of %d (compiled in %.1f s).",
               step, workdir, len(data.test_images), num_batches, batch_size,
               k, min(chunk, k), compile_time)

  loop_start = last_log = time.time()
  outputs = []
  for i in range(num_batches):
    batch_images, batch_mask = batch(i)
    outputs.append(jax.device_get(
        evaluate(params, batch_images, batch_mask, rng, index(i))))
    now = time.time()
    if now - last_log > 5.0 or i + 1 == num_batches:
      rate = (i + 1) / (now - loop_start)
      logging.info("batch %d/%d (%.0f%%)  %.1f s  ETA %s", i + 1, num_batches,
                   100 * (i + 1) / num_batches, now - loop_start,
                   writers.format_eta((num_batches - i - 1) / rate))
      last_log = now
  eval_time = time.time() - loop_start
  stacked = {name: np.stack([o[name] for o in outputs]) for name in outputs[0]}
  metrics = summarize(stacked, mask, data.num_dims)

  result = {
      "step": step,
      "dataset": config.data.name,
      "split": config.data.eval_split,
      "binarization": (f"fixed, seed {config.data.binarization_seed}"
                       if config.data.binarization != "none" else "none"),
      "num_importance_samples": k,
      "chunk_size": min(chunk, k),
      "batch_size": batch_size,
      "seed": seed,
      **metrics,
      "flops": flops,
      "flops_method": (
          "XLA cost analysis ('flops' of compile().cost_analysis()) of the "
          "batch function compiled for one device, plus (chunks - 1) times "
          "that of one chunk update (XLA counts a loop body once), times the "
          "number of batches, padding included"),
      "eval_time_s": eval_time,
      "compile_time_s": compile_time,
      "wall_time_s": time.time() - start_time,
      "device": f"{num_devices} x {jax.devices()[0].device_kind}",
      "jax_version": jax.__version__,
  }
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result


def format_table(result: dict[str, Any]) -> str:
  """A small plain-text table of the main numbers of `eval.json`."""
  k = result["num_importance_samples"]
  rows = [
      (f"-log p(x), IS k={k}", f"{result['nll']:.3f} +- "
       f"{result['nll_stderr']:.3f}", f"{result['nll_bits_per_dim']:.4f}"),
      ("-ELBO, 1 sample", f"{result['nelbo']:.3f} +- "
       f"{result['nelbo_stderr']:.3f}", f"{result['nelbo_bits_per_dim']:.4f}"),
      (f"-ELBO, mean of {k} log-weights", f"{result['nelbo_k']:.3f}", ""),
      ("gap -ELBO - (-log p(x))", f"{result['elbo_gap']:.3f}", ""),
      ("reconstruction -log p(x|z)", f"{result['recon']:.3f}", ""),
      ("KL(q(z|x) || p(z))", f"{result['kl']:.3f}", ""),
      ("active units", f"{result['active_units']} / {result['latent_dim']}",
       ""),
  ]
  width = max(len(r[0]) for r in rows)
  lines = [f"{'':<{width}}  {'nats':>17}  {'bits/dim':>8}"]
  lines += [f"{a:<{width}}  {b:>17}  {c:>8}" for a, b, c in rows]
  lines.append(f"{result['num_examples']} {result['split']} examples, "
               f"chunks of {result['chunk_size']}, "
               f"{result['flops']:.3g} FLOPs, {result['eval_time_s']:.1f} s.")
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Command line.

def _define_flags() -> None:
  # Defined only when this module runs as a program: the train loop imports
  # it, and main.py already defines --workdir.
  flags.DEFINE_string("workdir", None, "Workdir of a training run to evaluate.")
  flags.DEFINE_integer(
      "num_importance_samples", None,
      "Importance samples K per example; default the config's "
      "eval.num_importance_samples, else "
      f"{DEFAULT_NUM_IMPORTANCE_SAMPLES}.")
  flags.DEFINE_integer(
      "chunk_size", None,
      "Samples scored at once (memory ~ chunk_size * batch_size); default the "
      f"config's eval.importance_chunk_size, else {DEFAULT_CHUNK_SIZE}.")
  flags.DEFINE_integer(
      "batch_size", None, "Examples per device call; default eval.batch_size.")
  flags.DEFINE_integer(
      "seed", None,
      "Seed of the importance samples; default the config's seed.")


def _quiet_orbax(record) -> bool:
  # Orbax logs every restore at INFO; keep its warnings only. The level is
  # the standard library's: absl's logging.WARNING is -1, on its own scale.
  return (record.levelno >= std_logging.WARNING
          or "/orbax/" not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.get_absl_handler().addFilter(_quiet_orbax)
  try:
    f = flags.FLAGS
    if not f.workdir:
      raise UserError("Give the workdir of a training run with --workdir.")
    result = evaluate_workdir_nll(f.workdir, f.num_importance_samples,
                                  f.chunk_size, f.batch_size, f.seed)
  except UserError as e:
    logging.error("%s", e)
    print(f"vae_jax: {e}", file=sys.stderr)
    sys.exit(2)
  print(format_table(result))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
