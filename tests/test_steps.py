"""The pure steps: PRNG streams, per-model hparams, train and eval steps.

Tiny models on synthetic 4x4 images: the steps are the production functions,
bound to their static arguments as `train.train_group` binds them.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import config_lib
from vae_jax import models
from vae_jax import objectives
from vae_jax import optim
from vae_jax import steps

EVENT = (4, 4, 1)
STREAMS = ("init", "loop", "eval", "importance", "images")


def _config(kind="vae", **overrides):
  config = config_lib.base(kind)
  config.model.hidden = (8,)
  config.model.latent_dim = 3
  config.optimizer.warmup_steps = 2
  for key, value in overrides.items():
    config_lib.set_field(config, key, value)
  config_lib.validate(config)
  return config


def _parts(config, total_steps=10):
  """What the train loop builds: model, objective, tx, schedule, step fn."""
  model = models.create_model(config.model, EVENT)
  objective = objectives.create(config.objective, model)
  tx, schedule = optim.create(config.optimizer, total_steps)
  step_fn = functools.partial(steps.train_step, objective=objective, tx=tx,
                              schedule=schedule)
  return model, objective, tx, step_fn


def _state(config, model, tx):
  keys = steps.Keys.from_seed(config.seed)
  return steps.create_train_state(keys.init, keys.loop,
                                  steps.hparams_of(config), model=model,
                                  tx=tx, event_shape=EVENT)


def _batch(seed=0, n=6):
  return jax.random.bernoulli(jax.random.key(seed), 0.3,
                              (n, *EVENT)).astype(jnp.float32)


def _close(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      x, y, rtol=1e-4, atol=1e-5), a, b)


def _differ(a, b):
  return not all(jax.tree.leaves(jax.tree.map(np.allclose, a, b)))


# --- PRNG streams -------------------------------------------------------------


def test_keys_streams_are_distinct_and_fixed_by_the_seed():
  data = {seed: {s: tuple(np.asarray(jax.random.key_data(
      getattr(steps.Keys.from_seed(seed), s))).tolist()) for s in STREAMS}
          for seed in (0, 1, 2)}
  # Every stream of every seed is its own: no two purposes (or two seeds)
  # share random numbers.
  every = [k for d in data.values() for k in d.values()]
  assert len(set(every)) == len(every)
  # The same seed gives the same keys, every time.
  for seed in (0, 1, 2):
    again = steps.Keys.from_seed(seed)
    for s in STREAMS:
      assert tuple(np.asarray(jax.random.key_data(
          getattr(again, s))).tolist()) == data[seed][s]
  # The documented derivation, which every run's numbers depend on.
  root = jax.random.key(0)
  init, loop = jax.random.split(root)
  expected = {"init": init, "loop": loop,
              "eval": jax.random.fold_in(root, 1 << 20),
              "importance": jax.random.fold_in(root, 1 << 21),
              "images": jax.random.fold_in(root, 1 << 22)}
  for s, key in expected.items():
    assert tuple(np.asarray(jax.random.key_data(key)).tolist()) == data[0][s]
  # The streams draw different numbers.
  draws = [tuple(np.asarray(jax.random.normal(
      getattr(steps.Keys.from_seed(0), s), (4,))).tolist()) for s in STREAMS]
  assert len(set(draws)) == len(STREAMS)


# --- per-model hyperparameters ------------------------------------------------


@pytest.mark.parametrize("name", sorted(objectives.HPARAMS))
def test_hparam_and_group_fields_follow_the_objective(name):
  config = _config("ae" if name == "ae" else "vae", **{"objective.name": name})
  fields = steps.hparam_fields(config)
  assert fields == {"learning_rate": "optimizer.learning_rate",
                    **{h: f"objective.{h}" for h in objectives.HPARAMS[name]}}
  assert steps.group_fields(config) == ("seed", "data.train_classes",
                                        *fields.values())
  assert set(objectives.hparams(config.objective)) == set(
      objectives.HPARAMS[name])
  flat = config_lib.flatten(config)
  hparams = steps.hparams_of(config)
  assert set(hparams) == set(fields)
  for h, field in fields.items():
    assert hparams[h].shape == () and hparams[h].dtype == jnp.float32
    assert float(hparams[h]) == pytest.approx(flat[field])
  # The objective reads no per-model hparam outside the table (a model of a
  # group could not differ in it).
  model = models.create_model(config.model, EVENT)
  params = models.init_params(model, jax.random.key(0), EVENT)
  objective = objectives.create(config.objective, model)
  only = {h: hparams[h] for h in objectives.HPARAMS[name]}
  loss, _ = objective(params, _batch(), jax.random.key(1), only)
  assert loss.shape == (6,)


# --- train steps --------------------------------------------------------------


@pytest.mark.parametrize("kind, overrides", [
    ("vae", {}),
    ("ae", {"objective.corruption": "gaussian", "objective.noise_level": 0.2}),
])
def test_metric_names_are_the_keys_the_vmapped_step_returns(kind, overrides):
  config = _config(kind, **overrides)
  model, _, tx, step_fn = _parts(config)
  state = steps.stack([_state(config, model, tx)] * 2)
  group_step = steps.vmap_models(step_fn)
  objective = objectives.create(config.objective, model)
  names = steps.metric_names(objective, state, (6, *EVENT))
  _, metrics = jax.jit(group_step)(state, _batch())
  assert sorted(names) == sorted(metrics)  # jit returns dicts sorted.
  assert {"loss", "recon", "grad_norm", "learning_rate"} <= set(names)
  assert all(v.shape == (2,) for v in metrics.values())
  # From shapes alone, as the train loop may call it.
  assert steps.metric_names(objective, jax.eval_shape(lambda: state),
                            (6, *EVENT)) == names


def test_vmapped_group_of_two_equals_two_single_steps():
  configs = [_config(**{"seed": 0, "objective.beta": 1.0,
                        "optimizer.learning_rate": 1e-2}),
             _config(**{"seed": 3, "objective.beta": 4.0,
                        "optimizer.learning_rate": 3e-3})]
  model, _, tx, step_fn = _parts(configs[0])
  singles = [_state(c, model, tx) for c in configs]
  # Different seeds: different initial parameters.
  assert _differ(singles[0].params, singles[1].params)
  group = steps.stack(singles)
  group_step = jax.jit(steps.vmap_models(step_fn))
  single_step = jax.jit(step_fn)
  group_metrics, single_metrics = [], [[], []]
  for i in range(3):  # Past step 0, so Adam's moments and the schedule count.
    x = _batch(seed=i)
    group, m = group_step(group, x)
    group_metrics.append(m)
    for k in range(2):
      singles[k], m = single_step(singles[k], x)
      single_metrics[k].append(m)
  for k in range(2):
    _close(steps.index(group, k), singles[k])
    _close([steps.index(m, k) for m in group_metrics], single_metrics[k])
  assert int(group.step[0]) == int(group.step[1]) == 3
  # The two models did differ: their own hparams reached their own step.
  assert not np.allclose(group_metrics[-1]["learning_rate"][0],
                         group_metrics[-1]["learning_rate"][1])
  assert _differ(steps.index(group.params, 0), steps.index(group.params, 1))


def test_kl_warmup_follows_the_state_step_in_training_only():
  config = _config(**{"objective.beta": 2.0, "objective.kl_warmup_steps": 100})
  model, objective, tx, step_fn = _parts(config)
  state = _state(config, model, tx)
  x = _batch()
  train = jax.jit(step_fn)
  for step, weight in ((0, 0.0), (25, 0.5), (50, 1.0), (100, 2.0),
                       (400, 2.0)):
    _, m = train(state.replace(step=jnp.int32(step)), x)
    # The loss of the step's own forward pass: recon + w KL, w = 2 s / 100.
    np.testing.assert_allclose(m["loss"], m["recon"] + weight * m["kl"],
                               rtol=1e-5, err_msg=f"step {step}")
    np.testing.assert_allclose(m["nelbo"], m["recon"] + m["kl"], rtol=1e-5)
  # Evaluation scores the full objective whatever the state's step.
  ev = jax.jit(functools.partial(steps.eval_step, objective=objective))
  m = ev(state.params, state.hparams, x, jax.random.key(5))
  assert m["loss"].shape == (6,)
  np.testing.assert_allclose(m["loss"], m["recon"] + 2.0 * m["kl"],
                             rtol=1e-5)
  # Without warm-up the step does not matter.
  config = _config(**{"objective.beta": 2.0})
  _, _, _, plain_fn = _parts(config)
  _, m = jax.jit(plain_fn)(state.replace(step=jnp.int32(25)), x)
  np.testing.assert_allclose(m["loss"], m["recon"] + 2.0 * m["kl"],
                             rtol=1e-5)

