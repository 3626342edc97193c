"""Pure, jit-compiled steps: train state, PRNG streams, train and eval steps.

Every train state is *stacked*: each leaf has a leading model axis `[K]`,
and a single run is a group of K = 1. `train_step` updates one model;
`vmap_models` maps it over the stacked group with the data batch shared.
`train_chunk` runs up to `training.steps_per_call` steps of a group in one
device call (`run_steps`, a `lax.while_loop` whose trip count is data, so
nothing recompiles).

Everything a step does is a function of (state, step): the batch comes from
`batching.TrainBatches`, its binarization from `fold_in(data key,
step)` and the model's noise from `fold_in(state.rng, step)`. Restoring a
checkpoint therefore resumes bit for bit.
"""

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from vae_jax import compiler
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import objectives


@dataclasses.dataclass(frozen=True)
class Keys:
  """Every PRNG stream of a run, by purpose, from its `seed`.

  The derivations are fixed: changing one changes the numbers of every run.
  """
  init: jax.Array  # parameter initialization
  loop: jax.Array  # the model's noise at step s: fold_in(loop, s)
  eval: jax.Array  # latent samples of test batch i: fold_in(eval, i)
  importance: jax.Array  # importance samples (`vae_jax.importance`)
  images: jax.Array  # prior samples and corruptions shown in image grids

  @classmethod
  def from_seed(cls, seed: int) -> "Keys":
    # The root key from the (up to 64-bit) Python int as jax.random.key
    # takes it; the streams in one compiled program, not op by op.
    return cls(*_derive_keys_program()(jax.random.key(seed)))


def _derive_keys(root: jax.Array) -> tuple[jax.Array, ...]:
  """`Keys`' fields, in order, from the root key of a seed."""
  init, loop = jax.random.split(root)
  return (init, loop, jax.random.fold_in(root, 1 << 20),
          jax.random.fold_in(root, 1 << 21), jax.random.fold_in(root, 1 << 22))


@functools.cache
def _derive_keys_program():
  # Built on first use (compiler.jit asks for the backend), with the
  # options of the package's other programs. Integer arithmetic: the same
  # keys at any LLVM level.
  return compiler.jit(_derive_keys, tree_reductions=False)


# What `train_step` adds to the objective's metrics.
STEP_METRICS = ("grad_norm", "learning_rate")


@flax.struct.dataclass
class TrainState:
  """One model's state; stacked, each leaf gains a leading `[K]` axis."""
  step: jax.Array  # [] int32: updates applied so far
  params: Any
  opt_state: optax.OptState
  rng: jax.Array  # [2] uint32: key data of the loop key (`Keys.loop`)
  hparams: dict[str, jax.Array]  # [] float32 each, see `hparam_fields`


def hparam_fields(config: ml_collections.ConfigDict) -> dict[str, str]:
  """The per-model scalar hyperparameters: step input name -> config field.

  The one table of them: it decides which configs can share a vmapped
  group (with `seed`, see `group_fields`), what the step receives as data,
  and the sweep summary's columns.
  """
  return {"learning_rate": "optimizer.learning_rate",
          **{name: f"objective.{name}"
             for name in objectives.HPARAMS[config.objective.name]}}


def group_fields(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """Config fields in which models of one vmapped group may differ.

  The hyperparameters and seed, and the training classes: models that
  train on their own classes get their own batches (`train_chunk`).
  """
  return ("seed", "data.train_classes", *hparam_fields(config).values())


def hparams_of(config: ml_collections.ConfigDict) -> dict[str, jax.Array]:
  """`{name: [] float32}` of `hparam_fields`, read from `config`."""
  out = {}
  for name, field in hparam_fields(config).items():
    section, key = field.split(".")
    out[name] = jnp.asarray(config[section][key], jnp.float32)
  return out


def create_train_state(rng_init: jax.Array, rng_loop: jax.Array,
                       hparams: dict[str, jax.Array], *,
                       model: models.VAE | models.Autoencoder,
                       tx: optax.GradientTransformation,
                       event_shape: tuple[int, ...]) -> TrainState:
  """One model's initial state (not stacked).

  Args:
    rng_init: `Keys.init` of the model's seed.
    rng_loop: `Keys.loop`; kept in the state as key data.
    hparams: `hparams_of(config)`.
    model: the model.
    tx: its optimizer.
    event_shape: the shape of one example.
  """
  params = models.init_params(model, rng_init, event_shape)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(params),
                    rng=jax.random.key_data(rng_loop), hparams=hparams)


def stack(trees: list[Any]) -> Any:
  """Stacks pytrees of the same structure on a new leading axis."""
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def index(tree: Any, i: int | jax.Array) -> Any:
  """Model i of a stacked pytree."""
  return jax.tree.map(lambda a: a[i], tree)


def unstack(state: TrainState, num_models: int) -> list[TrainState]:
  """Each model's state of a stacked group (what its checkpoint holds)."""
  return _unstack_program(num_models)(state)


@functools.cache
def _unstack_program(num_models: int):
  # One program, not an indexing op per leaf run one by one (each compiled
  # for its shape: ~40 programs for the conv VAE's state).
  return compiler.jit(
      lambda state: [index(state, i) for i in range(num_models)],
      tree_reductions=False)


def all_finite(tree: Any) -> jax.Array:
  """`[]` bool: no leaf of `tree` holds a NaN or an inf."""
  return _all_finite_program()(tree)


@functools.cache
def _all_finite_program():
  # Without XLA:CPU's tree reductions, which an AND does not need (they are
  # for long float sums): the 784-500-500-50 VAE's parameters took 0.48-0.53
  # s to compile with them, 0.17 s without.
  return compiler.jit(
      lambda tree: jnp.all(jnp.stack([jnp.all(jnp.isfinite(x))
                                      for x in jax.tree.leaves(tree)])),
      tree_reductions=False)


def train_step(state: TrainState, x: jax.Array, *,
               objective: objectives.Objective,
               tx: optax.GradientTransformation, schedule: optax.Schedule
               ) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update of one model.

  Args:
    state: the model's train state (not stacked).
    x: `[B, *event]` float32 model inputs (see `input_pipeline.preprocess`).
    objective: per-example loss, see `vae_jax.objectives`.
    tx: optimizer without its learning rate (`vae_jax.optim.create`).
    schedule: unit learning-rate schedule.

  Returns:
    The new state and batch-mean metrics (scalars): the objective's, plus
    `grad_norm` and `learning_rate` (the effective rate of this step).
  """
  rng_model = jax.random.fold_in(jax.random.wrap_key_data(state.rng),
                                 state.step)

  def loss_fn(params):
    loss, metrics = objective(params, x, rng_model, state.hparams,
                              step=state.step)
    return jnp.mean(loss), metrics

  grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  lr = state.hparams["learning_rate"]
  params = jax.tree.map(lambda p, u: p - lr * u, state.params, updates)
  metrics = {k: jnp.mean(v) for k, v in metrics.items()}
  # Behind the barrier the norm's squares are not merged with Adam's (same
  # expression): XLA:CPU would write the shared squares out as one more
  # gradient-sized array, a pass over memory that a vmapped group, whose
  # state does not fit the cache, pays for (README, "Sweeps").
  metrics["grad_norm"] = optax.global_norm(
      jax.lax.optimization_barrier(grads))
  metrics["learning_rate"] = lr * schedule(state.step)
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state), metrics


def vmap_models(step_fn, per_model_data: bool = False):
  """`step_fn(state, x)` over a stacked group of models sharing each batch
  `[B, ...]`, or, with `per_model_data`, each with its own (`x` `[K, B, ...]`).

  Each model gets the batch as its own row of a broadcast `[K, B, ...]`
  array: its layers are then batched matmuls whose kernel gradients come
  out in the parameters' layout. With the batch unbatched (`in_axes=None`)
  the first layer is one wide matmul, but XLA:CPU transposes its gradient
  for every use in the optimizer (a group of 8 MLP VAEs 784-500-20 took 31
  ms per step that way on 2 CPU cores, 27 ms with the broadcast).
  """
  vmapped = jax.vmap(step_fn)
  if per_model_data:  # x is [K, B, ...]: each model its own batch.
    return vmapped

  def group_step(state, x):
    num_models = state.step.shape[0]
    return vmapped(state, jnp.broadcast_to(x, (num_models, *x.shape)))

  return group_step


def map_models(fn, num_models: int, in_axes: tuple[int | None, ...]):
  """`jax.vmap(fn, in_axes)` over K stacked models, and K = 1 without it.

  For K = 1 the model axis is sliced off the inputs, `fn` runs on the one
  model and its outputs get the axis back: the same numbers, but XLA:CPU
  runs a batched matmul of batch 1 slower than a plain one (a step of
  784-500-20 took 17% longer, experiments/benchmark_train.py).
  """
  if num_models > 1:
    return jax.vmap(fn, in_axes=in_axes)

  def one(*args):
    args = [index(a, 0) if axis == 0 else a for a, axis in zip(args, in_axes)]
    return jax.tree.map(lambda a: a[None], fn(*args))

  return one


def train_chunk(state: TrainState, images: jax.Array, num_steps: jax.Array,
                first_step: jax.Array, sums: dict[str, jax.Array],
                finite: jax.Array, *, step_fn, binarization: str,
                data_seed: int, per_model_data: bool = False
                ) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
  """`run_steps` on a stacked group of K models (`[K]` state and sums).

  `step_fn` is one model's step (`train_step` with its static arguments
  bound); it is vmapped over the group (`vmap_models`), except for K = 1,
  where the model axis is sliced off before the loop and restored after it
  (see `map_models`): the loop is then the one-model loop. With
  `per_model_data`, `images` is `[C, K, B, ...]`: each model its own
  batches (models that train on their own classes).
  """
  run = functools.partial(run_steps, num_steps=num_steps,
                          first_step=first_step, finite=finite,
                          binarization=binarization, data_seed=data_seed)
  if state.step.shape[0] > 1:
    return run(state, images=images, sums=sums,
               step_fn=vmap_models(step_fn, per_model_data),
               per_model_data=per_model_data)
  state, sums, finite = run(index(state, 0),
                            images=images[:, 0] if per_model_data else images,
                            sums=index(sums, 0), step_fn=step_fn)
  expand = lambda tree: jax.tree.map(lambda a: a[None], tree)
  return expand(state), expand(sums), finite


def run_steps(state: TrainState, images: jax.Array, num_steps: jax.Array,
              first_step: jax.Array, sums: dict[str, jax.Array],
              finite: jax.Array, *, step_fn, binarization: str,
              data_seed: int, per_model_data: bool = False
              ) -> tuple[TrainState, dict[str, jax.Array], jax.Array]:
  """Runs up to `num_steps` <= C steps on `[C, B, ...]` batches, on device.

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
    state: the state `step_fn` takes: one model's, or a stacked group's.
    images: `[C, B, *event]` batches (uint8 pixels, or floats), or `[C, K, B,
      *event]` with `per_model_data`; the first `num_steps` are used.
    num_steps: `[]` int32, how many steps to run.
    first_step: `[]` int32, the step of `images[0]` (every model of a group
      is at it; passed in so a group sharded over devices needs no reduction
      of its step counters).
    sums: running sums of each step metric, shaped like the step's metrics.
    finite: `[]` bool, False once a step was not finite.
    step_fn: `(state, x) -> (state, metrics)`.
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
    key = jax.random.fold_in(data_key, first_step + i)
    prep = lambda b: input_pipeline.preprocess(b, key, binarization)
    # Each model's batch with the same key: as the model would alone.
    x = jax.vmap(prep)(images[i]) if per_model_data else prep(images[i])
    state, metrics = step_fn(state, x)
    finite = (jnp.all(jnp.isfinite(metrics["loss"]))
              & jnp.all(jnp.isfinite(metrics["grad_norm"])))
    sums = jax.tree.map(lambda s, m: s + jnp.where(finite, m, 0.0), sums,
                        metrics)
    return i + 1, state, sums, finite

  _, state, sums, finite = jax.lax.while_loop(
      cond, body, (jnp.zeros((), jnp.int32), state, sums, finite))
  return state, sums, finite


def metric_names(objective: objectives.Objective, state: TrainState,
                 batch_shape: tuple[int, ...]) -> tuple[str, ...]:
  """The metrics `train_step` returns, from shapes alone (no compute).

  The objective's metrics, then `STEP_METRICS`. Only the objective is
  traced (`jax.eval_shape`), so the train step is traced once, when its
  program compiles.

  Args:
    objective: the run's objective.
    state: a stacked train state, or a `jax.ShapeDtypeStruct` tree of it.
    batch_shape: `[B, *event]` of the model inputs.
  """
  one = jax.eval_shape(lambda s: index(s, 0), state)

  def metrics(params, hparams, x):
    return objective(params, x, jax.random.key(0), hparams,
                     step=jnp.zeros((), jnp.int32))[1]

  x = jax.ShapeDtypeStruct(batch_shape, jnp.float32)
  return (*jax.eval_shape(metrics, one.params, one.hparams, x),
          *STEP_METRICS)


def eval_step(params: Any, hparams: dict[str, jax.Array], x: jax.Array,
              rng: jax.Array, *,
              objective: objectives.Objective) -> dict[str, jax.Array]:
  """The objective's per-example test metrics, `[B]` each, for one model.

  The full objective (no warm-up: `step` is not given); a VAE's latents are
  drawn from `rng`. Batch-level terms (free bits, the sparsity penalty) see
  the whole batch `x`.
  """
  _, metrics = objective(params, x, rng, hparams)
  return metrics
