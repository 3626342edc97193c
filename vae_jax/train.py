"""Training and evaluation: one loop for every model and objective.

The loop trains a *group* of M >= 1 models whose arrays have the same shapes
(a single run is a group of one). Their train states are stacked on a leading
axis and `train_step` is `jax.vmap`-ed over (state, loop key, hyperparameters)
with the data batch shared (order and binarization), so M models cost one
compile and one data pass.
Steps run on device in chunks (`training.steps_per_call` steps per jitted
call, a `lax.while_loop`), so Python dispatch is paid once per chunk; the
chunk length is data, never a shape, so nothing recompiles.

Everything a step does is a function of (state, step): the batch comes from
`input_pipeline.TrainBatches`, its binarization from `fold_in(data key, step)`
and the model's noise from `fold_in(loop_key, step)`.
Restoring the last checkpoint therefore resumes bit for bit.
"""

import functools
import json
import os
import time
from typing import Any

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
import optax
import orbax.checkpoint as ocp

from vae_jax import corruption
from vae_jax import input_pipeline
from vae_jax import losses
from vae_jax import models
from vae_jax import objectives
from vae_jax import optim
from vae_jax import trained
from vae_jax import writers
from vae_jax.errors import UserError

# Fields a resumed run may change: they alter what is logged or how long it
# runs, not what a step computes. Anything else differing is an error.
RESUMABLE_CHANGES = ("eval.", "training.log_every_steps",
                     "training.checkpoint_every_steps",
                     "training.checkpoints_to_keep", "training.steps_per_call",
                     "training.num_epochs", "training.model_axis_size",
                     "data.data_dir", "data.download")
# Fields that may differ between models trained in one vmapped group.
GROUP_HPARAMS = ("seed", "optimizer.learning_rate", "objective.beta",
                 "objective.noise_level", "objective.l1_weight",
                 "objective.sparsity_weight", "objective.sparsity_target")


# Metrics every train step adds to its objective's.
STEP_METRICS = ("grad_norm", "learning_rate")


class TrainingDiverged(UserError):
  """The loss or gradient became NaN or inf."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # [] int32: updates applied so far
  params: Any
  opt_state: optax.OptState


# ----------------------------------------------------------------------------
# Pure functions: state creation, train and eval steps.


def create_train_state(rng: jax.Array, model: models.VAE | models.Autoencoder,
                       tx: optax.GradientTransformation,
                       event_shape: tuple[int, ...]) -> TrainState:
  params = models.init_params(model, rng, event_shape)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params))


def hparams_of(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """Per-model scalar hyperparameters, fed to the step as data."""
  h = {"learning_rate": config.optimizer.learning_rate,
       **objectives.hparams(config.objective)}
  return {k: jnp.asarray(v, jnp.float32) for k, v in h.items()}


def train_step(state: TrainState, x: jax.Array, loop_key: jax.Array,
               hparams: dict[str, jax.Array], *,
               objective: objectives.Objective,
               tx: optax.GradientTransformation, schedule: optax.Schedule
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update of one model.

  Args:
    state: the model's train state.
    x: `[B, *event]` float32 model inputs (see `input_pipeline.preprocess`).
    loop_key: the run's loop key; the model's noise at this step comes from
      `fold_in(loop_key, step)`.
    hparams: scalar hyperparameters (`learning_rate`, objective's own).
    objective: per-example loss, see `vae_jax.objectives`.
    tx: optimizer without its learning rate (`vae_jax.optim.create`).
    schedule: unit learning-rate schedule.

  Returns:
    The new state and batch-mean metrics (scalars).
  """
  rng_model = jax.random.fold_in(loop_key, state.step)

  step_hparams = {**hparams, "step": state.step}

  def loss_fn(params):
    loss, metrics = objective(params, x, rng_model, step_hparams)
    return jnp.mean(loss), metrics

  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  lr = hparams["learning_rate"]
  params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
  metrics = {k: jnp.mean(v) for k, v in metrics.items()}
  # Behind the barrier the norm's squares are not merged with Adam's (same
  # expression): XLA:CPU would write the shared squares out as one more
  # gradient-sized array, a pass over memory that a vmapped group, whose
  # state does not fit the cache, pays for (README, "Sweeps").
  metrics["grad_norm"] = optax.global_norm(
      jax.lax.optimization_barrier(grads))
  metrics["learning_rate"] = lr * schedule(state.step)
  return TrainState(step=state.step + 1, params=params,
                    opt_state=opt_state), metrics


def run_steps(state: TrainState, images: jax.Array, num_steps: jax.Array,
              first_step: jax.Array, loop_key: jax.Array,
              hparams: dict[str, jax.Array], sums: dict[str, jax.Array],
              finite: jax.Array, *, step_fn, binarization: str,
              data_seed: int) -> tuple[TrainState, dict[str, jax.Array],
                                       jax.Array]:
  """Runs up to `num_steps` <= K steps on `[K, B, ...]` batches, on device.

  The batch of step s is preprocessed once, with the key
  `fold_in(key(data_seed), s)`: like the data order, a dynamic binarization
  belongs to the data, so the models of a group share it and a model alone
  sees exactly the inputs it sees in a group.

  Metric sums and the finite flag are carried from call to call on the
  device, so the host dispatches chunk after chunk without waiting and only
  reads them back when it logs. The loop stops at the first step whose loss
  or gradient norm is not finite (for any model of a group), and once
  `finite` is False later calls run no step: that state is never saved.

  Args:
    state: train state (stacked in a group).
    images: `[K, B, *event]` uint8 batches; the first `num_steps` are used.
    num_steps: `[]` int32, how many steps to run.
    first_step: `[]` int32, the step of `images[0]` (every model of a group
      is at it; passed in so a group sharded over devices needs no reduction
      of its step counters).
    loop_key: the run's loop key.
    hparams: per-model scalar hyperparameters.
    sums: running sums of each step metric (`[]`, or `[M]` in a group).
    finite: `[]` bool, False once a step was not finite.
    step_fn: `train_step` with its static arguments bound (vmapped in a
      group).
    binarization: how `images` become model inputs.
    data_seed: seeds the binarization noise.

  Returns:
    `(state, sums, finite)`. When `finite` is False, the bad step is
    `state.step - 1`.
  """

  data_key = jax.random.key(data_seed)

  def cond(carry):
    i, _, _, finite = carry
    return (i < num_steps) & finite

  def body(carry):
    i, state, sums, _ = carry
    x = input_pipeline.preprocess(
        images[i], jax.random.fold_in(data_key, first_step + i), binarization)
    state, metrics = step_fn(state, x, loop_key, hparams)
    finite = (jnp.all(jnp.isfinite(metrics["loss"]))
              & jnp.all(jnp.isfinite(metrics["grad_norm"])))
    sums = jax.tree.map(lambda s, m: s + jnp.where(finite, m, 0.0), sums,
                        metrics)
    return i + 1, state, sums, finite

  _, state, sums, finite = jax.lax.while_loop(
      cond, body, (jnp.zeros((), jnp.int32), state, sums, finite))
  return state, sums, finite


def eval_sums(params: Any, images: jax.Array, mask: jax.Array,
              eval_key: jax.Array, hparams: dict[str, jax.Array], *,
              objective: objectives.Objective) -> dict[str, jax.Array]:
  """Per-batch sums of per-example metrics over a padded evaluation set.

  Args:
    params: model parameters.
    images: `[NB, EB, *event]` uint8, already binarized if the run is.
    mask: `[NB, EB]`, 1 for real examples and 0 for padding.
    eval_key: batch i uses `fold_in(eval_key, i)` for its latent samples.
    hparams: as in `train_step`.
    objective: as in `train_step`.

  Returns:
    Each metric's masked sum per batch, `[NB]` (add them up in float64).
    Batch-level terms (free bits, the sparsity penalty) see the padding
    examples of the last batch; choose an `eval.batch_size` that divides the
    test set (500 for MNIST) for them to be exact. -ELBO, reconstruction
    and PSNR are per example and always exact.
  """

  def body(_, inputs):
    i, batch, batch_mask = inputs
    x = input_pipeline.preprocess(batch, None, "none")
    _, metrics = objective(params, x, jax.random.fold_in(eval_key, i), hparams)
    return None, {k: jnp.sum(v * batch_mask) for k, v in metrics.items()}

  _, sums = jax.lax.scan(body, None,
                         (jnp.arange(images.shape[0]), images, mask))
  return sums


def reconstruct(model: models.VAE | models.Autoencoder, params: Any,
                x: jax.Array) -> jax.Array:
  """E[x|z] at the posterior mean (or the code) of x, `[N, *event]`."""
  return model.apply(params, x, method="reconstruct")


def sample_prior(model: models.VAE, params: Any, seed: jax.Array, n: int,
                 latent_dim: int) -> jax.Array:
  """E[x|z] for z ~ N(0, I), `[n, *event]`, z drawn from the run's seed."""
  _, rng = jax.random.split(jax.random.key(seed))
  z = jax.random.normal(rng, (n, latent_dim))
  return model.apply(params, z, method="decode").mean()


# ----------------------------------------------------------------------------
# Configs and workdirs.


def flatten_config(config: ml_collections.ConfigDict | dict,
                   prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in (config.items() if isinstance(config, dict)
               else config.to_dict().items()):
    if isinstance(v, dict):
      out.update(flatten_config(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def config_differences(a, b, ignore: tuple[str, ...] = ()) -> list[str]:
  fa, fb = flatten_config(a), flatten_config(b)
  return sorted(k for k in set(fa) | set(fb)
                if fa.get(k) != fb.get(k) and not k.startswith(ignore))


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Every check that needs no data: run before any compute."""
  t = config.training
  if t.batch_size <= 0:
    raise UserError(f"training.batch_size must be a positive integer, got "
                    f"{t.batch_size}.")
  if t.num_epochs <= 0:
    raise UserError(f"training.num_epochs must be positive, got "
                    f"{t.num_epochs}.")
  if t.steps_per_call <= 0:
    raise UserError(f"training.steps_per_call must be positive, got "
                    f"{t.steps_per_call}.")
  if config.eval.batch_size <= 0:
    raise UserError(f"eval.batch_size must be a positive integer, got "
                    f"{config.eval.batch_size}.")
  if t.model_axis_size < 1 or jax.device_count() % t.model_axis_size:
    raise UserError(f"training.model_axis_size={t.model_axis_size} must "
                    f"divide the {jax.device_count()} devices.")
  n = jax.device_count() // t.model_axis_size
  where = f"the {n} devices" + (" of the data axis"
                                if t.model_axis_size > 1 else "")
  for name, size in (("training.batch_size", t.batch_size),
                     ("eval.batch_size", config.eval.batch_size)):
    if size % n:
      raise UserError(f"{name}={size} does not divide across {where}; use a "
                      f"multiple of {n}.")
  if t.batch_size % config.data.num_shards:
    raise UserError(f"training.batch_size={t.batch_size} does not divide "
                    f"among data.num_shards={config.data.num_shards} shards.")
  input_pipeline.validate_config(config.data)
  models.validate_config(config.model)
  objectives.validate_config(config.objective, config.model)
  optim.validate_config(config.optimizer)


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir that holds a run with an incompatible config."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  saved = trained.load_config(workdir).to_dict()
  diff = config_differences(saved, config, RESUMABLE_CHANGES)
  if diff:
    shown = ", ".join(f"{k} ({flatten_config(saved).get(k)!r} -> "
                      f"{flatten_config(config).get(k)!r})" for k in diff[:3])
    raise UserError(
        f"Workdir {workdir} holds a run with a different config ({shown}"
        f"{', ...' if len(diff) > 3 else ''}): use a new --workdir, or the "
        "saved config.json.")


def itstime(step: int, every: int, total: int) -> bool:
  """Periodic work happens every `every` steps and at the last step."""
  return step == total or (every > 0 and step % every == 0)


def _next_event(step: int, total: int, everies: list[int]) -> int:
  nxt = [total] + [(step // e + 1) * e for e in everies if e > 0]
  return min(nxt)


def _tree_index(tree, i: int):
  return jax.tree.map(lambda a: a[i], tree)


def _stack(trees):
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


# ----------------------------------------------------------------------------
# The loop.


class Setup:
  """What a group of runs shares: data, model, optimizer, compiled steps."""

  def __init__(self, configs: list[ml_collections.ConfigDict]):
    for c in configs:
      validate_config(c)
    self.config = config = configs[0]
    for c in configs[1:]:
      diff = config_differences(config, c, GROUP_HPARAMS)
      if diff:
        raise UserError("Models trained in one group may differ only in "
                        f"{', '.join(GROUP_HPARAMS)}; these differ: "
                        f"{', '.join(diff)}.")
    self.num_models = len(configs)
    self.grouped = self.num_models > 1
    self.data = input_pipeline.load(
        config.data, process_index=jax.process_index(),
        process_count=jax.process_count())
    self.model = models.create_model(config.model, self.data.event_shape)

    # Batches are split over the "data" axis; a group's stacked models over
    # the "model" axis (when their number divides by it: else replicated).
    t = config.training
    model_axis = t.model_axis_size
    self.mesh = jax.make_mesh(
        (model_axis, jax.device_count() // model_axis), ("model", "data"),
        axis_types=(jax.sharding.AxisType.Auto,) * 2)  # XLA propagates.
    self.replicated = jax.NamedSharding(self.mesh, jax.P())
    self.batch_sharding = jax.NamedSharding(self.mesh, jax.P(None, "data"))
    if self.grouped and self.num_models % model_axis == 0:
      self.model_sharding = jax.NamedSharding(self.mesh, jax.P("model"))
      logging.info("Mesh %s: %d models split over the model axis.",
                   dict(self.mesh.shape), self.num_models)
    else:
      if model_axis > 1:
        logging.warning("%d models do not divide over the model axis of %d "
                        "devices: each device holds all of them.",
                        self.num_models, model_axis)
      self.model_sharding = self.replicated

    num_shards = config.data.num_shards
    self.steps_per_epoch = ((self.data.num_train_examples // num_shards)
                            // (t.batch_size // num_shards))
    if self.steps_per_epoch == 0:
      raise UserError(f"training.batch_size={t.batch_size} is larger than "
                      f"the {self.data.num_train_examples} training examples.")
    self.total_steps = max(1, round(t.num_epochs * self.steps_per_epoch))
    self.tx, self.schedule = optim.create(config.optimizer, self.total_steps)
    self.objective = objectives.create(config.objective, self.model,
                                       config.model)

    step = functools.partial(
        train_step, objective=self.objective, tx=self.tx,
        schedule=self.schedule)
    evaluate = functools.partial(eval_sums, objective=self.objective)
    if self.grouped:
      step = _group_step(step, self.num_models)
      evaluate = jax.vmap(evaluate, in_axes=(0, None, None, 0, 0))
    self.metric_names = (*objectives.metric_names(config.objective),
                         *STEP_METRICS)
    self.run_steps = jax.jit(
        functools.partial(run_steps, step_fn=step,
                          binarization=config.data.binarization,
                          data_seed=config.data.shuffle_seed),
        donate_argnums=(0, 6))
    self.eval_sums = jax.jit(evaluate)
    self.reconstruct = jax.jit(functools.partial(reconstruct, self.model))
    self.corrupt = jax.jit(functools.partial(
        corruption.corrupt, config.objective.get("corruption", "none")))
    self.sample_prior = jax.jit(
        functools.partial(sample_prior, self.model),
        static_argnames=("n", "latent_dim"))

    self.train_batches = input_pipeline.TrainBatches(
        self.data.train_shards, self.data.shard_indices,
        t.batch_size // num_shards, self.steps_per_epoch,
        seed=config.data.shuffle_seed)
    eval_images, eval_mask = input_pipeline.eval_batches(
        self.data.test_images, config.eval.batch_size)
    eval_sharding = jax.NamedSharding(self.mesh, jax.P(None, "data"))
    self.eval_images = _global_array(eval_images, eval_sharding)
    self.eval_mask = _global_array(eval_mask, eval_sharding)

  def init_state(self, config: ml_collections.ConfigDict) -> TrainState:
    rng_init, _ = _keys(config)
    # Built by every process inside jit: a replicated global array.
    return jax.jit(functools.partial(
        create_train_state, model=self.model, tx=self.tx,
        event_shape=self.data.event_shape),
                   out_shardings=self.replicated)(rng_init)

  def place(self, configs: list[ml_collections.ConfigDict],
            states: list[TrainState]):
    """(state, loop_keys, hparams, eval_keys) of the group, on the mesh.

    Stacked on a leading model axis in a group, as they are for one model.
    """

    def build(states):
      per_model = [(s, _keys(c)[1], hparams_of(c), _eval_key(c))
                   for c, s in zip(configs, states)]
      return _stack(per_model) if self.grouped else per_model[0]

    return jax.jit(build, out_shardings=self.model_sharding)(states)

  def zero_sums(self) -> dict[str, jax.Array]:
    """Metric sums at the start of a logging window, one per model."""
    shape = (self.num_models,) if self.grouped else ()
    return jax.device_put({k: np.zeros(shape, np.float32)
                           for k in self.metric_names}, self.model_sharding)

  def chunk(self, start_step: int, num_steps: int) -> jax.Array:
    local = self.train_batches.chunk(start_step, num_steps,
                                     self.config.training.steps_per_call)
    return jax.make_array_from_process_local_data(self.batch_sharding, local)

  def evaluate(self, params, eval_keys, hparams) -> list[dict[str, float]]:
    """Test-set means per model, summed in float64 on the host."""
    sums = _to_host(self.eval_sums(params, self.eval_images,
                                         self.eval_mask, eval_keys, hparams))
    n = len(self.data.test_images)
    per_model = []
    for i in range(self.num_models):
      means = {k: float(np.sum(np.asarray(v[i] if self.grouped else v,
                                          np.float64))) / n
               for k, v in sums.items()}
      if "nelbo" in means:
        means["bits_per_dim"] = float(losses.bits_per_dim(
            means["nelbo"], self.data.num_dims))
      per_model.append(means)
    return per_model

  def compile(self, state: TrainState, loop_keys: jax.Array,
              hparams: dict[str, jax.Array], eval_keys: jax.Array) -> None:
    """Compiles the train chunk, evaluation and image functions up front.

    Training then runs at full speed from its first step, so the images/s
    and the ETA it reports are right from the first window.
    """
    start = time.time()
    self.run_steps = self.run_steps.lower(
        state, self.chunk(0, 0), self.scalar(0), self.scalar(0), loop_keys,
        hparams, self.zero_sums(), self.scalar(True)).compile()
    self.eval_sums = self.eval_sums.lower(
        state.params, self.eval_images, self.eval_mask, eval_keys,
        hparams).compile()
    self.images(_tree_index(state.params, 0) if self.grouped
                else state.params, self.config)
    logging.info("Compiled in %.1f s.", time.time() - start)

  def scalar(self, value) -> jax.Array:
    """A replicated scalar: int32 step counts, bool flags."""
    return jax.device_put(
        np.asarray(value, np.bool_ if isinstance(value, bool) else np.int32),
        self.replicated)

  def images(self, params, config) -> dict[str, np.ndarray]:
    """Reconstruction (and, for VAEs, prior-sample) grids for one model.

    A denoising autoencoder's grid shows clean, corrupted and reconstructed
    rows; others alternate originals and reconstructions.
    """
    n = config.eval.num_images
    x = _global_array(self.data.test_images[:n].astype(np.float32) / 255.0,
                      self.replicated)
    rows = [x]
    o = config.objective
    if o.name == "ae" and o.corruption != "none":
      rows.append(self.corrupt(x, jax.random.key(config.seed),
                               o.noise_level))
    rows.append(self.reconstruct(params, rows[-1]))
    cols = min(n, 16)
    blocks = []  # Row blocks of `cols` images, one row per kind of image.
    for i in range(0, n, cols):
      for r in rows:
        part = np.asarray(r[i:i + cols])
        blank = np.ones((cols - len(part), *part.shape[1:]), part.dtype)
        blocks.append(np.concatenate([part, blank]))
    out = {"reconstructions": writers.image_grid(np.concatenate(blocks), cols)}
    if models.is_vae(config.model):
      samples = self.sample_prior(params, self.scalar(config.seed), n=n,
                                  latent_dim=config.model.latent_dim)
      out["samples"] = writers.image_grid(np.asarray(samples), cols)
    return out


def _group_step(step_fn, num_models: int):
  """`step_fn` vmapped over a group of models that share each batch.

  Each model gets the batch as its own row of a broadcast `[M, B, ...]`
  array: its layers are then batched matmuls whose kernel gradients come
  out in the parameters' layout. With the batch unbatched (`in_axes=None`)
  the first layer is one wide matmul, but XLA:CPU transposes its gradient
  for every use in the optimizer (a group of 8 MLP VAEs 784-500-20 took 31
  ms per step that way on 2 CPU cores, 27 ms with the broadcast).
  """
  vmapped = jax.vmap(step_fn)

  def group_step(state, x, loop_keys, hparams):
    x = jnp.broadcast_to(x, (num_models, *x.shape))
    return vmapped(state, x, loop_keys, hparams)

  return group_step


def _keys(config: ml_collections.ConfigDict):
  """(rng_init, rng_loop) from the config's seed."""
  rng_init, rng_loop = jax.random.split(jax.random.key(config.seed))
  return rng_init, rng_loop


def _eval_key(config: ml_collections.ConfigDict) -> jax.Array:
  return jax.random.fold_in(jax.random.key(config.seed), 1 << 20)


def _global_array(x: np.ndarray, sharding: jax.NamedSharding) -> jax.Array:
  """A global array from data every process holds in full."""
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def _to_host(tree):
  """Numpy values of (possibly multi-process) global arrays."""
  return jax.tree.map(
      lambda x: np.asarray(x if x.is_fully_addressable
                           else multihost_utils.process_allgather(x,
                                                                  tiled=True)),
      tree)


def _all_finite(tree) -> bool:
  return bool(jax.tree.reduce(
      lambda a, b: a & b,
      jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree)))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, float]:
  """Trains one model in `workdir` (resuming if it holds a checkpoint)."""
  return train_group([config], [workdir])[0]


def train_group(configs: list[ml_collections.ConfigDict],
                workdirs: list[str]) -> list[dict[str, float]]:
  """Trains models that share shapes in one vmapped program.

  Each workdir receives exactly what a single run writes. Returns the final
  test metrics of each model.
  """
  for config, workdir in zip(configs, workdirs):
    validate_config(config)
    check_workdir(config, workdir)
  setup = Setup(configs)
  config, total = setup.config, setup.total_steps
  t = config.training
  managers = [trained.checkpoint_manager(w, c)
              for c, w in zip(configs, workdirs)]

  states = [setup.init_state(c) for c in configs]
  common = set.intersection(*(set(m.all_steps()) for m in managers))
  start = max(common, default=0)
  if start:
    states = [m.restore(start, args=ocp.args.StandardRestore(s))
              for m, s in zip(managers, states)]
    logging.info("Resumed from the checkpoint at step %d.", start)
  if jax.process_index() == 0:
    for c, w in zip(configs, workdirs):
      with open(os.path.join(w, "config.json"), "w") as f:
        f.write(c.to_json(indent=2))
  metric_writers = [writers.MetricWriter(w, start) for w in workdirs]

  state, loop_keys, hparams, eval_keys = setup.place(configs, states)
  setup.compile(state, loop_keys, hparams, eval_keys)

  logging.info("Training %d model(s) for %d steps (%d per epoch), global "
               "batch %d on %d device(s).", setup.num_models, total,
               setup.steps_per_epoch, t.batch_size, jax.device_count())
  everies = [t.log_every_steps, config.eval.every_steps,
             t.checkpoint_every_steps]

  def chunk_len(step):  # Chunks end where periodic work is due.
    return min(t.steps_per_call, _next_event(step, total, everies) - step)

  def model_slice(tree, i):
    return _tree_index(tree, i) if setup.grouped else tree

  def check_finite():
    """Raises TrainingDiverged if a step since the last check was bad."""
    if not bool(finite):
      bad = int(np.max(_to_host(state.step))) - 1
      last = managers[0].latest_step()
      raise TrainingDiverged(
          f"The loss or gradient became NaN or inf at step {bad}; training "
          "stopped and the last good checkpoint "
          f"({'none' if last is None else f'step {last}'}) was kept.")

  try:
    step, final = start, None
    sums, finite = setup.zero_sums(), setup.scalar(True)
    window_start, window_step = time.time(), step
    eta_start = (time.time(), step)
    n = chunk_len(step)
    images = setup.chunk(step, n) if step < total else None
    while step < total:
      state, sums, finite = setup.run_steps(
          state, images, setup.scalar(n), setup.scalar(step), loop_keys,
          hparams, sums, finite)
      # The device is busy with this chunk: gather the next one meanwhile.
      step, n = step + n, (chunk_len(step + n) if step + n < total else 0)
      images = setup.chunk(step, n) if n else None
      if not any(itstime(step, e, total) for e in everies):
        continue  # Nothing to report: keep the device fed.
      check_finite()

      if itstime(step, t.log_every_steps, total):
        host_sums = _to_host(sums)
        now, window = time.time(), step - window_step
        img_per_sec = window * t.batch_size / max(now - window_start, 1e-9)
        rate = (step - eta_start[1]) / max(now - eta_start[0], 1e-9)
        eta = writers.format_eta((total - step) / rate)
        for i, w in enumerate(metric_writers):
          means = {f"train/{k}": float(model_slice(v, i)) / window
                   for k, v in host_sums.items()}
          if "train/nelbo" in means:
            means["train/bits_per_dim"] = float(losses.bits_per_dim(
                means["train/nelbo"], setup.data.num_dims))
          means["train/img_per_sec"] = img_per_sec
          w.write_scalars(step, means)
        logging.info("step %d/%d (%.0f%%) loss %.3f  %.0f img/s  ETA %s",
                     step, total, 100 * step / total,
                     np.mean(host_sums["loss"]) / window, img_per_sec, eta)
        sums, window_start, window_step = setup.zero_sums(), time.time(), step

      if itstime(step, config.eval.every_steps, total):
        final = setup.evaluate(state.params, eval_keys, hparams)
        for i, (c, w) in enumerate(zip(configs, metric_writers)):
          w.write_scalars(step, {f"eval/{k}": v for k, v in final[i].items()})
          w.write_images(step, setup.images(model_slice(state.params, i), c))
          w.flush()
        logging.info("eval at step %d: %s", step, summary_line(final[0]))

      if itstime(step, t.checkpoint_every_steps, total):
        if not _all_finite(state.params):
          raise TrainingDiverged(f"The parameters became NaN or inf by step "
                                 f"{step}; training stopped and the last good "
                                 "checkpoint was kept.")
        for i, m in enumerate(managers):
          m.save(step, args=ocp.args.StandardSave(model_slice(state, i)))
  finally:
    # Commits checkpoints in flight, also when training stops on an error.
    for m in managers:
      m.wait_until_finished()

  if final is None:  # Resumed at the end: evaluate what is there.
    final = setup.evaluate(state.params, eval_keys, hparams)
  for i, (c, w, mw) in enumerate(zip(configs, workdirs, metric_writers)):
    mw.close()
    write_results(w, c, setup, final[i], total)
  for c, w in zip(configs, workdirs):
    if jax.process_count() > 1:
      # The importance-sampling evaluator runs in one process for now.
      logging.info("Multi-process run: score it with `python -m "
                   "vae_jax.evaluate --workdir=%s` on one host.", w)
    elif (models.is_vae(c.model)
          and c.eval.get("num_importance_samples", 0) > 0):
      from vae_jax import evaluate  # pylint: disable=g-import-not-at-top
      nll = evaluate.evaluate_workdir_nll(w)
      logging.info("%s: test NLL %.3f +- %.3f nats (k=%d).", w, nll["nll"],
                   nll["nll_stderr"], c.eval.num_importance_samples)
  return final


def summary_line(metrics: dict[str, float]) -> str:
  """The headline test numbers of a model, for the log."""
  if "nelbo" in metrics:
    return (f"-ELBO {metrics['nelbo']:.3f} nats "
            f"({metrics['bits_per_dim']:.4f} bits/dim)")
  line = (f"reconstruction {metrics['recon']:.3f} nats, "
          f"PSNR {metrics['psnr']:.2f} dB")
  if "psnr_input" in metrics:
    line += f" (corrupted input {metrics['psnr_input']:.2f} dB)"
  return line


def write_results(workdir: str, config: ml_collections.ConfigDict,
                  setup: Setup, metrics: dict[str, float], step: int) -> None:
  if jax.process_index() != 0:
    return
  results = {
      "step": step,
      "dataset": config.data.name,
      "split": config.data.eval_split,
      "num_examples": len(setup.data.test_images),
      "binarization": (f"fixed, seed {config.data.binarization_seed}"
                       if config.data.binarization != "none" else "none"),
      **({"num_latent_samples": 1} if models.is_vae(config.model) else {}),
      **{f"test/{k}": v for k, v in metrics.items()},
  }
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)


def evaluate_workdir(config: ml_collections.ConfigDict,
                     workdir: str) -> dict[str, float]:
  """Scores the latest checkpoint in `workdir` on the test set, no training."""
  validate_config(config)
  check_workdir(config, workdir)
  manager = trained.checkpoint_manager(workdir, config)
  step = manager.latest_step()
  if step is None:
    raise UserError(f"Workdir {workdir} holds no checkpoint to evaluate; "
                    "train first.")
  setup = Setup([config])
  state = manager.restore(step, args=ocp.args.StandardRestore(
      setup.init_state(config)))
  state, _, hparams, eval_key = setup.place([config], [state])
  metrics = setup.evaluate(state.params, eval_key, hparams)[0]
  write_results(workdir, config, setup, metrics, step)
  logging.info("eval at step %d: %s", step, summary_line(metrics))
  return metrics
