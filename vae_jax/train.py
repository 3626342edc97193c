"""The train loop: one for every model, objective and group size.

`train_group` trains M >= 1 models whose arrays have the same shapes (a
single run is a group of one) in one compiled program: their train states
are stacked on a leading axis and `steps.train_step` is vmapped over them,
with each data batch shared. It is written as sections (config, data,
model, objective, optimizer, mesh, state, restore, evaluators, loop), each
calling a named builder of its module; `evaluate` (`--mode=eval`) is the
same run without the loop (`trained.load(...).evaluate()`).
"""

import contextlib
import functools
import os
import time

from absl import logging
import jax
import ml_collections
import numpy as np

from vae_jax import batching
from vae_jax import compiler
from vae_jax import config_lib
from vae_jax import evaluators
from vae_jax import input_pipeline
from vae_jax import models
from vae_jax import objectives
from vae_jax import optim
from vae_jax import report
from vae_jax import sharding
from vae_jax import steps
from vae_jax import trained
from vae_jax import workdir as workdir_lib
from vae_jax import writers
from vae_jax.errors import UserError


class TrainingDiverged(UserError):
  """The loss or gradient became NaN or inf."""


def itstime(step: int, every: int, total: int) -> bool:
  """Periodic work happens every `every` steps (0: never) and at the last."""
  return step == total or (every > 0 and step % every == 0)


def schedule_length(config: ml_collections.ConfigDict,
                    num_train_examples: int) -> tuple[int, int]:
  """(steps per epoch, total steps) of a run; UserError if too few data."""
  t, shards = config.training, config.data.num_shards
  per_epoch = (num_train_examples // shards) // (t.batch_size // shards)
  if per_epoch == 0:
    raise UserError(f"training.batch_size={t.batch_size} is larger than "
                    f"the {num_train_examples} training examples.")
  if t.num_steps:
    return per_epoch, t.num_steps
  return per_epoch, max(1, round(t.num_epochs * per_epoch))


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict[str, dict[str, float]]:
  """Trains one model in `workdir` (resuming if it holds a checkpoint).

  Returns:
    The final metrics of each evaluator, `{name: {metric: value}}`.
  """
  return train_group([config], [workdir])[0]


def train_group(configs: list[ml_collections.ConfigDict],
                workdirs: list[str]) -> list[dict[str, dict[str, float]]]:
  """Trains models that share shapes in one vmapped program.

  Each workdir receives exactly what a single run writes. Returns each
  model's final metrics, as `train_and_evaluate`.
  """
  # Config: validated once per run, before any data is read.
  for c, w in zip(configs, workdirs):
    config_lib.validate(c)
    workdir_lib.check_writable(w)
    workdir_lib.check_compatible(c, w)
  _check_group(configs)

  # One process per workdir: existing ones are locked now, before any data
  # is read, new ones as they are created (`workdir_lib.locked`); the locks
  # are held until the run returns or fails.
  with contextlib.ExitStack() as locks:
    for w in workdirs:
      if os.path.isdir(w):
        locks.enter_context(workdir_lib.locked(w))
    return _train_locked(configs, workdirs, locks)


def _train_locked(configs: list[ml_collections.ConfigDict],
                  workdirs: list[str], locks: contextlib.ExitStack
                  ) -> list[dict[str, dict[str, float]]]:
  """`train_group`'s run, once the existing workdirs are locked."""
  config = configs[0]
  t = config.training

  # Data, checked before anything is written. Models that train on their
  # own classes get their own training split each.
  classes = [c.data.train_classes for c in configs]
  per_model_data = len(set(classes)) > 1
  data = input_pipeline.load(
      config.data, process_index=jax.process_index(),
      process_count=jax.process_count(),
      standardization=workdir_lib.read_standardization(workdirs[0]),
      train_classes=classes if per_model_data else None)
  likelihood = models.resolve_likelihood(config.model,
                                         data.event_shape)[0]
  input_pipeline.check_likelihood(data, likelihood,
                                  models.is_vae(config.model))
  lengths = [schedule_length(config, split.num_examples)
             for split in data.train]
  if len({total for _, total in lengths}) > 1:
    raise UserError(
        "Models that train on their own classes share one program, so they "
        "need the same number of steps, but data.train_classes "
        f"{', '.join(repr(c) for c in classes)} give "
        f"{', '.join(str(n) for _, n in lengths)} steps: set "
        "training.num_steps.")
  total = lengths[0][1]
  model, objective, tx, schedule = build_model(config, data.event_shape, total)
  # Mesh.
  mesh = sharding.create(t.model_axis_size, len(configs))

  # Evaluators (they check what they need of the data: before writing).
  evals = evaluators.create(evaluators.Context(
      configs=list(configs), model=model, objective=objective, data=data,
      mesh=mesh, workdirs=list(workdirs)))

  # The workdirs: nothing is written before this point.
  for w in workdirs:
    if not os.path.isdir(w):
      os.makedirs(w)
      locks.enter_context(workdir_lib.locked(w))
    workdir_lib.write_standardization(w, data.standardization)

  # State, restored from the newest checkpoint that every model has
  # intact; a damaged one (truncated files) is set aside with a warning.
  managers = [workdir_lib.checkpoint_manager(w, t.checkpoints_to_keep)
              for w in workdirs]
  initial = initial_states(configs, model, tx, data.event_shape, mesh)
  states = start = None
  while states is None:
    start = max(set.intersection(*(set(m.all_steps()) for m in managers)),
                default=0)
    for w, m in zip(workdirs, managers):
      for later in (s for s in m.all_steps() if s > start):
        # A model of the group got further (killed between the group's
        # saves, or trained alone): the group redoes those steps together.
        logging.warning("%s: dropping the checkpoint at step %d, past the "
                        "group's common step %d.", w, later, start)
        m.delete(later)
    if not start:
      states = initial
      break
    states = []
    for w, m, like in zip(workdirs, managers, initial):
      try:
        states.append(workdir_lib.restore_checked(m, start, like))
      except workdir_lib.DamagedCheckpoint as e:
        moved = workdir_lib.set_aside(m, w, start)
        logging.warning("%s Training resumes from the newest intact "
                        "checkpoint; the damaged one was moved to %s.", e,
                        moved)
        states = None
        break
  if start:
    logging.info("Resumed from the checkpoint at step %d.", start)
  state = compiler.jit(lambda *s: steps.stack(s), tree_reductions=False,
                       out_shardings=mesh.models)(*states)
  for c, w in zip(configs, workdirs):
    workdir_lib.write_config(w, c)
    workdir_lib.write_provenance(w)

  # The compiled chunk of steps, and the batches it reads.
  step_fn = model_step(objective, tx, schedule)
  train_chunk = chunk_program(config, step_fn, data.binarization,
                              per_model_data)
  chunk = batch_source(config, data, mesh)
  scalar = functools.partial(sharding.scalar, sharding=mesh.replicated)
  names = steps.metric_names(objective, state,
                             (t.batch_size, *data.event_shape))
  zero_sums = functools.partial(jax.device_put,
                                {k: np.zeros(len(configs), np.float32)
                                 for k in names}, mesh.models)

  # Everything compiles before the first step, so the first window's
  # images/s and ETA are right.
  compile_start = time.time()
  train_chunk = train_chunk.lower(state, chunk(0, 0), scalar(0), scalar(0),
                                  zero_sums(), scalar(True)).compile()
  for ev in evals.values():
    ev.compile(state)
  # And what a checkpoint runs: the finiteness check, each model's slice.
  jax.block_until_ready((steps.all_finite(state.params),
                         steps.unstack(state, len(configs))))
  logging.info("Compiled in %.1f s.", time.time() - compile_start)
  logging.info("Training %d model(s) in one vmapped program for %d steps "
               "(%s per epoch), global batch %d on %d device(s)%s.",
               len(configs), total,
               "/".join(str(p) for p, _ in lengths), t.batch_size,
               jax.device_count(),
               ", each model on its own classes "
               f"({', '.join(repr(c) for c in classes)})"
               if per_model_data else "")

  # The loop.
  metric_writers = [writers.MetricWriter(w, start) for w in workdirs]
  everies = [t.log_every_steps, t.checkpoint_every_steps,
             *(ev.every_steps for ev in evals.values())]
  step, final = start, {}
  # The training-metric window in progress at the checkpoint (its sums
  # since the last log): a resumed run logs what an uninterrupted one does.
  window_step, saved = start, [workdir_lib.read_window(w, start)
                               for w in workdirs]
  sums = zero_sums()
  if start and all(saved):
    window_step = saved[0]["window_step"]
    sums = jax.device_put({k: np.array([s["sums"][k] for s in saved],
                                       np.float32) for k in names},
                          mesh.models)
  finite = scalar(True)
  window_start, eta_start = time.time(), (time.time(), step)

  def chunk_len(s):  # Chunks end where periodic work is due.
    nxt = min([total] + [(s // e + 1) * e for e in everies if e > 0])
    return min(t.steps_per_call, nxt - s)

  try:
    n = chunk_len(step) if step < total else 0
    images = chunk(step, n) if n else None
    while step < total:
      state, sums, finite = train_chunk(state, images, scalar(n),
                                        scalar(step), sums, finite)
      # The device is busy with this chunk: gather the next one meanwhile.
      step, n = step + n, (chunk_len(step + n) if step + n < total else 0)
      images = chunk(step, n) if n else None
      if not any(itstime(step, e, total) for e in everies):
        continue  # Nothing to report: keep the device fed.
      if not bool(finite):
        raise TrainingDiverged(
            f"The loss or gradient became NaN or inf at step "
            f"{int(np.max(sharding.to_host(state.step))) - 1}; training "
            f"stopped and the last good checkpoint ("
            f"{_step_name(managers[0].latest_step())}) was kept.")

      if itstime(step, t.log_every_steps, total):
        now, window = time.time(), step - window_step
        img_per_sec = window * t.batch_size / max(now - window_start, 1e-9)
        rate = (step - eta_start[1]) / max(now - eta_start[0], 1e-9)
        host = sharding.to_host(sums)
        for i, w in enumerate(metric_writers):
          means = {f"train/{k}": float(v[i]) / window for k, v in host.items()}
          bits = (data.bits_per_dim(means["train/nelbo"], likelihood)
                  if "train/nelbo" in means else None)
          if bits is not None:
            means["train/bits_per_dim"] = bits
          w.write_scalars(step, {**means, "train/img_per_sec": img_per_sec})
        logging.info("step %d/%d (%.0f%%) loss %.3f  %.0f img/s  ETA %s",
                     step, total, 100 * step / total,
                     np.mean(host["loss"]) / window, img_per_sec,
                     writers.format_eta((total - step) / rate))
        sums, window_start, window_step = zero_sums(), time.time(), step

      for name, ev in evals.items():
        if itstime(step, ev.every_steps, total):
          final[name] = ev.run(state)
          _write_outputs(metric_writers, step, name, final[name])

      if itstime(step, t.checkpoint_every_steps, total):
        if not bool(steps.all_finite(state.params)):
          raise TrainingDiverged(f"The parameters became NaN or inf by step "
                                 f"{step}; training stopped and the last "
                                 "good checkpoint was kept.")
        host = sharding.to_host(sums)
        for i, (w, m, one) in enumerate(zip(workdirs, managers,
                                            steps.unstack(state, len(configs)))):
          workdir_lib.write_window(w, step, window_step,
                                   {k: v[i] for k, v in host.items()},
                                   m.all_steps())
          workdir_lib.save(m, step, one)
  finally:
    # Commits checkpoints in flight, also when training stops on an error.
    for m in managers:
      m.wait_until_finished()

  for name, ev in evals.items():
    if name not in final:  # Resumed at the end: evaluate what is there.
      final[name] = ev.run(state)
  out = []
  for i, (c, w, mw) in enumerate(zip(configs, workdirs, metric_writers)):
    mw.close()
    per_model = {name: outputs[i] for name, outputs in final.items()}
    workdir_lib.write_results(w, results(c, total, per_model))
    report.write(w)
    out.append({name: o.metrics for name, o in per_model.items()})
  return out


# ----------------------------------------------------------------------------
# Builders of the loop's parts (also what the benchmarks time).


def build_model(config: ml_collections.ConfigDict,
                event_shape: tuple[int, ...], total_steps: int):
  """`(model, objective, tx, schedule)` of `config` for examples of
  `event_shape` and a run of `total_steps` (the schedule's length)."""
  model = models.create_model(config.model, event_shape)
  objective = objectives.create(config.objective, model)
  tx, schedule = optim.create(config.optimizer, total_steps)
  return model, objective, tx, schedule


def initial_states(configs: list[ml_collections.ConfigDict], model, tx,
                   event_shape: tuple[int, ...],
                   mesh: sharding.Mesh) -> list[steps.TrainState]:
  """Each config's initial state (not stacked), replicated on the mesh."""
  init = compiler.jit(functools.partial(
      steps.create_train_state, model=model, tx=tx, event_shape=event_shape),
                      tree_reductions=True,
                      out_shardings=mesh.replicated)
  keys = [steps.Keys.from_seed(c.seed) for c in configs]
  return [init(k.init, k.loop, steps.hparams_of(c))
          for k, c in zip(keys, configs)]


def model_step(objective, tx, schedule):
  """`steps.train_step` of one model, with its static arguments."""
  return functools.partial(steps.train_step, objective=objective, tx=tx,
                           schedule=schedule)


def chunk_program(config: ml_collections.ConfigDict, step_fn,
                  binarization: str, per_model_data: bool = False):
  """The jitted `steps.train_chunk` of a group whose models step with
  `step_fn` (`model_step`), on data binarized as `binarization` (the
  dataset's: "none" for tables), each model on its own batches with
  `per_model_data`; donates state and sums."""
  return compiler.jit(
      functools.partial(steps.train_chunk, step_fn=step_fn,
                        binarization=binarization,
                        per_model_data=per_model_data,
                        data_seed=config.data.shuffle_seed),
      donate_argnums=(0, 4),
      tree_reductions=models.is_convolutional(config.model))


def batch_source(config: ml_collections.ConfigDict,
                 data: input_pipeline.Dataset, mesh: sharding.Mesh):
  """`chunk(first, n)`: the global batches of steps [first, first + n),
  zero-padded to C = `training.steps_per_call`: `[C, B, ...]`, or
  `[C, K, B, ...]` when each of the K models has its own training split
  (each with its own epochs)."""
  t = config.training
  batches = [batching.TrainBatches(
      split.shards, data.shard_indices, t.batch_size // config.data.num_shards,
      schedule_length(config, split.num_examples)[0],
      seed=config.data.shuffle_seed) for split in data.train]

  def chunk(first: int, n: int) -> jax.Array:
    if len(batches) == 1:
      return jax.make_array_from_process_local_data(
          mesh.batches, batches[0].chunk(first, n, t.steps_per_call))
    return jax.make_array_from_process_local_data(
        mesh.model_batches, np.stack(
            [b.chunk(first, n, t.steps_per_call) for b in batches], axis=1))

  return chunk


def evaluate(config: ml_collections.ConfigDict,
             workdir: str) -> dict[str, dict[str, float]]:
  """Runs every enabled evaluator on the latest checkpoint (`--mode=eval`).

  The evaluators, keys and test set are those of training, so the numbers
  equal those written at the end of training for the same checkpoint.
  `config` may change the `eval`/`evals` sections (e.g.
  `--config.evals.nll.num_samples=5000`). Writes `results.json`; never
  reads the training set.
  """
  model = trained.load(workdir, config=config)
  per_model = model.evaluate()
  for name, o in per_model.items():
    writers.write_image_files(workdir, model.step, o.images, name)
    if o.metrics:
      logging.info("%s at step %d: %s", name, model.step,
                   evaluators.summary_line(name, o.metrics))
  new = results(config, model.step, per_model)
  if workdir_lib.is_done(workdir):
    old = workdir_lib.read_results(workdir)
    if old.get("step") == model.step:  # Keeps evaluators not run now.
      new = {**old, **new}
  workdir_lib.write_results(workdir, new)
  report.write(workdir)
  return {name: o.metrics for name, o in per_model.items()}


def results(config: ml_collections.ConfigDict, step: int,
            outputs: dict[str, evaluators.Output]) -> dict:
  """The contents of results.json: each evaluator's metrics and labels."""
  return {"step": step, "dataset": input_pipeline.data_name(config.data),
          **{name: {**o.metrics, **o.about} for name, o in outputs.items()
             if o.metrics}}


def _write_outputs(metric_writers, step: int, name: str,
                   outputs: list[evaluators.Output]) -> None:
  for w, o in zip(metric_writers, outputs):
    scalars = {f"{name}/{k}": v for k, v in o.metrics.items()
               if isinstance(v, (int, float))}
    if scalars:
      w.write_scalars(step, scalars)
    w.write_images(step, o.images, evaluator=name)
    w.flush()
  if outputs[0].metrics:
    logging.info("%s at step %d: %s", name, step,
                 evaluators.summary_line(name, outputs[0].metrics))


def _check_group(configs: list[ml_collections.ConfigDict]) -> None:
  fields = steps.group_fields(configs[0])
  for c in configs[1:]:
    diff = config_lib.differences(configs[0], c, fields)
    if diff:
      raise UserError("Models trained in one group may differ only in "
                      f"{', '.join(fields)}; these differ: {', '.join(diff)}.")


def _step_name(step: int | None) -> str:
  return "none" if step is None else f"step {step}"
