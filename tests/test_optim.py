"""Tests for vae_jax.optim.

The design under test: `create` returns a transformation without the peak
learning rate and the caller applies `params - learning_rate * update`. That
must reproduce Optax's own optimizers with `learning_rate * schedule` baked
in. The reference schedules below are written out by hand, independently of
`unit_schedule`, so a wrong schedule fails too.
"""

import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vae_jax import optim
from vae_jax.errors import UserError

_TOTAL_STEPS = 12
_WARMUP = 3
_END_FRACTION = 0.1


def _config(**overrides) -> ml_collections.ConfigDict:
  """The optimizer section of configs/mnist_vae.py, with overrides."""
  config = ml_collections.ConfigDict()
  config.name = "adam"
  config.learning_rate = 2e-3
  config.schedule = "cosine"
  config.warmup_steps = 100
  config.end_learning_rate_fraction = 0.05
  config.b1 = 0.9
  config.b2 = 0.999
  config.eps = 1e-8
  config.weight_decay = 0.0
  config.momentum = 0.9
  config.nesterov = False
  config.grad_clip_norm = 0.0
  config.update(overrides)
  return config


def _reference_unit_schedule(schedule, warmup, total, end):
  """Hand-written warm-up + constant/cosine, as a function of the step."""

  def fn(step):
    step = jnp.asarray(step, jnp.float32)
    warm = step / warmup if warmup else jnp.ones_like(step)
    if schedule == "constant":
      after = jnp.ones_like(step)
    else:
      t = jnp.clip((step - warmup) / (total - warmup), 0.0, 1.0)
      after = end + (1.0 - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
    return jnp.where(step < warmup, warm, after)

  return fn


def _loss(params):
  """A small quadratic with different curvature per coordinate."""
  a = jnp.array([1.0, 4.0, 0.5])
  c = jnp.array([1.0, -2.0, 3.0])
  return (0.5 * jnp.sum(a * (params["w"] - c)**2)
          + 0.5 * jnp.sum((params["b"] - 1.5)**2 * 2.0))


def _init_params():
  return {"w": jnp.array([3.0, 2.0, -1.0]),
          "b": jnp.array([[0.5, -0.5], [2.0, 4.0]])}


def _run_unit_tx(tx, learning_rate, num_steps):
  """The package's way: params - learning_rate * update."""
  params = _init_params()
  state = tx.init(params)
  lr = jnp.asarray(learning_rate)
  for _ in range(num_steps):
    grads = jax.grad(_loss)(params)
    updates, state = tx.update(grads, state, params)
    params = jax.tree.map(lambda p, u: p - lr * u, params, updates)
  return params


def _run_optax(tx, num_steps):
  """Optax's way: the learning rate is inside `tx`."""
  params = _init_params()
  state = tx.init(params)
  for _ in range(num_steps):
    grads = jax.grad(_loss)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


def _reference_tx(name, lr_schedule, config):
  if name == "adam":
    return optax.adam(lr_schedule, b1=config.b1, b2=config.b2, eps=config.eps)
  if name == "adamw":
    return optax.adamw(lr_schedule, b1=config.b1, b2=config.b2,
                       eps=config.eps, weight_decay=config.weight_decay)
  return optax.sgd(lr_schedule, momentum=config.momentum,
                   nesterov=config.nesterov)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
@pytest.mark.parametrize("name,learning_rate,overrides", [
    ("adam", 0.05, {}),
    ("adamw", 0.05, {"weight_decay": 0.3}),
    ("sgd", 0.02, {"momentum": 0.9}),
    ("sgd", 0.02, {"momentum": 0.8, "nesterov": True}),
])
def test_create_equals_optax_with_learning_rate_baked_in(
    name, learning_rate, overrides, schedule):
  config = _config(name=name, schedule=schedule, learning_rate=learning_rate,
                   warmup_steps=_WARMUP,
                   end_learning_rate_fraction=_END_FRACTION, **overrides)
  tx, unit = optim.create(config, _TOTAL_STEPS)
  ref_unit = _reference_unit_schedule(schedule, _WARMUP, _TOTAL_STEPS,
                                      _END_FRACTION)
  ref_tx = _reference_tx(name, lambda s: learning_rate * ref_unit(s), config)
  num_steps = _TOTAL_STEPS + 2  # Past the end of the schedule too.
  for steps in (1, _WARMUP + 1, num_steps):
    got = _run_unit_tx(tx, learning_rate, steps)
    want = _run_optax(ref_tx, steps)
    jax.tree.map(
        lambda g, w: np.testing.assert_allclose(g, w, rtol=2e-6, atol=1e-6),
        got, want)
  # The optimizer did move the params a good way, so the match is not
  # between two no-ops (the first warm-up step has rate 0).
  moved = jax.tree.map(lambda g, p: float(jnp.max(jnp.abs(g - p))), got,
                       _init_params())
  assert max(jax.tree.leaves(moved)) > 0.05
  # The schedule returned is the unit schedule used inside tx.
  for step in range(num_steps):
    assert float(unit(step)) == pytest.approx(float(ref_unit(step)),
                                              abs=1e-6)


def test_create_adamw_weight_decay_is_scaled_by_the_schedule():
  # With zero gradient, adamw's update is lr * schedule * wd * p only: the
  # decay must follow the schedule (0 during the first warm-up step).
  config = _config(name="adamw", schedule="constant", learning_rate=0.1,
                   weight_decay=0.5, warmup_steps=2)
  tx, _ = optim.create(config, 10)
  params = {"w": jnp.array([2.0, -4.0])}
  state = tx.init(params)
  zero = {"w": jnp.zeros(2)}
  updates, state = tx.update(zero, state, params)  # Step 0: schedule 0.
  np.testing.assert_allclose(updates["w"], [0.0, 0.0], atol=1e-7)
  updates, state = tx.update(zero, state, params)  # Step 1: schedule 1/2.
  np.testing.assert_allclose(updates["w"], 0.5 * 0.5 * np.array([2.0, -4.0]),
                             rtol=1e-6)


def test_create_clips_gradients():
  config = _config(name="sgd", momentum=0.0, schedule="constant",
                   warmup_steps=0, grad_clip_norm=1.0)
  tx, _ = optim.create(config, 10)
  params = {"w": jnp.zeros(2)}
  updates, _ = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(params),
                         params)
  np.testing.assert_allclose(updates["w"], [0.6, 0.8], rtol=1e-6)


# --- unit_schedule ------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_unit_schedule_warmup(schedule):
  config = _config(schedule=schedule, warmup_steps=10,
                   end_learning_rate_fraction=0.05)
  fn = optim.unit_schedule(config, 100)
  assert float(fn(0)) == 0.0
  assert float(fn(5)) == pytest.approx(0.5, abs=1e-6)
  assert float(fn(10)) == pytest.approx(1.0, abs=1e-6)
  values = np.array([float(fn(s)) for s in range(11)])
  assert np.all(np.diff(values) > 0)  # Strictly increasing warm-up.


def test_unit_schedule_constant_stays_at_one():
  config = _config(schedule="constant", warmup_steps=10)
  fn = optim.unit_schedule(config, 100)
  for step in (10, 11, 50, 100, 1000):
    assert float(fn(step)) == pytest.approx(1.0, abs=1e-6)


def test_unit_schedule_cosine_decays_to_the_end_fraction():
  end = 0.05
  config = _config(schedule="cosine", warmup_steps=10,
                   end_learning_rate_fraction=end)
  fn = optim.unit_schedule(config, 110)
  # Halfway through the 100 decay steps the cosine is at its midpoint.
  assert float(fn(60)) == pytest.approx((1.0 + end) / 2, abs=1e-6)
  assert float(fn(35)) == pytest.approx(
      end + (1 - end) * 0.5 * (1 + math.cos(math.pi / 4)), abs=1e-6)
  assert float(fn(110)) == pytest.approx(end, abs=1e-6)
  assert float(fn(500)) == pytest.approx(end, abs=1e-6)
  values = np.array([float(fn(s)) for s in range(10, 111)])
  assert np.all(np.diff(values) < 0)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_unit_schedule_without_warmup_starts_at_one(schedule):
  config = _config(schedule=schedule, warmup_steps=0,
                   end_learning_rate_fraction=0.0)
  fn = optim.unit_schedule(config, 20)
  assert float(fn(0)) == pytest.approx(1.0, abs=1e-6)
  expected_end = 1.0 if schedule == "constant" else 0.0
  assert float(fn(20)) == pytest.approx(expected_end, abs=1e-6)


# --- validate_config ----------------------------------------------------------


def test_config_fields_match_the_default_config():
  # _config mirrors configs/mnist_vae.py; fail here if that file drifts.
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs",
                      "mnist_vae.py")
  spec = importlib.util.spec_from_file_location("mnist_vae", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  default = module.get_config().optimizer
  assert set(default.keys()) == set(_config().keys())
  optim.create(default, 1000)


def test_validate_config_accepts_the_default_section():
  optim.validate_config(_config())
  optim.validate_config(_config(name="adamw", weight_decay=1e-4))
  optim.validate_config(_config(name="sgd", schedule="constant"))


@pytest.mark.parametrize("overrides,match", [
    ({"name": "lamb"}, "optimizer.name"),
    ({"schedule": "linear"}, "optimizer.schedule"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -1e-3}, "learning_rate"),
    ({"name": "adam", "weight_decay": 1e-4}, "weight_decay"),
    ({"name": "sgd", "weight_decay": 1e-4}, "weight_decay"),
    ({"warmup_steps": -1}, "warmup_steps"),
])
def test_validate_config_rejects(overrides, match):
  with pytest.raises(UserError, match=match):
    optim.validate_config(_config(**overrides))
  # create validates too, before building anything.
  with pytest.raises(UserError, match=match):
    optim.create(_config(**overrides), 100)
