"""The fast softplus and the compiler options of the hot programs."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import DEFAULT_CONFIG, REPO
from vae_jax import compiler
from vae_jax import config_lib
from vae_jax import importance
from vae_jax import losses
from vae_jax import models
from vae_jax import steps
from vae_jax import train
from vae_jax.evaluators import common


def test_softplus_equals_jax_softplus_and_its_derivative_is_the_sigmoid():
  x = jnp.concatenate([
      jax.random.normal(jax.random.key(0), (20000,)) * 30.0,
      jnp.array([0.0, -0.0, 1e-8, -1e-8, 15.0, 17.0, 88.7, 89.0, 104.0,
                 -104.0, 1e30, -1e30, jnp.inf, -jnp.inf, jnp.nan])])
  ours = np.asarray(jax.jit(losses.softplus)(x))
  theirs = np.asarray(jax.jit(jax.nn.softplus)(x))
  np.testing.assert_array_equal(ours, theirs)  # Bit for bit, inf and NaN.
  grad = np.asarray(jax.jit(jax.vmap(jax.grad(losses.softplus)))(x))
  np.testing.assert_array_equal(grad, np.asarray(jax.nn.sigmoid(x)))
  # The derivative in closed form, in float64: 1 / (1 + e^-x).
  x64 = np.asarray(x[:20000], np.float64)
  np.testing.assert_allclose(grad[:20000], 1.0 / (1.0 + np.exp(-x64)),
                             rtol=1e-6, atol=1e-30)


def test_options_are_accepted_here_and_change_no_result_beyond_rounding():
  if jax.default_backend() == "cpu":
    assert compiler.options() == {"xla_cpu_experimental_ynn_fusion_type": "",
                                  "xla_backend_optimization_level": 1}
    assert compiler.options(tree_reductions=False) == {
        "xla_cpu_experimental_ynn_fusion_type": "",
        "xla_backend_optimization_level": 1,
        "xla_disable_hlo_passes": "tree_reduction_rewriter"}
  config = config_lib.get_config(DEFAULT_CONFIG, None, {
      "model.hidden": (64, 64), "model.latent_dim": 8})
  model = models.create_model(config.model, (28, 28, 1))
  params = models.init_params(model, jax.random.key(0), (28, 28, 1))
  images = (jax.random.uniform(jax.random.key(1), (50, 28, 28, 1)) < 0.3
            ).astype(jnp.uint8)
  fn = functools.partial(importance.evaluate_batch, model, num_samples=40,
                         chunk_size=10)
  args = (params, images, jnp.ones((50,)), jax.random.key(2),
          jnp.zeros((), jnp.int32))
  # jax's defaults; on the CPU, XLA's own LLVM level (the tests' XLA_FLAGS
  # set level 1).
  default = ({"xla_backend_optimization_level": compiler.XLA_DEFAULT_LEVEL}
             if jax.default_backend() == "cpu" else None)
  without = jax.jit(fn, compiler_options=default)(*args)
  for tree in (True, False):
    with_options = compiler.jit(fn, tree_reductions=tree)(*args)
    for name in ("log_px", "nelbo_k", "kl_per_dim"):
      np.testing.assert_allclose(with_options[name], without[name],
                                 rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="XLA:CPU's tree reductions")
def test_without_tree_reductions_a_batch_sum_has_no_reduce_window():
  x = jnp.ones((128, 500))
  hlo = {tree: compiler.jit(lambda x: jnp.sum(x, axis=0),
                            tree_reductions=tree).lower(x).compile().as_text()
         for tree in (True, False)}
  assert "reduce-window" in hlo[True]
  assert "reduce-window" not in hlo[False]


@pytest.mark.parametrize("name, tree", [("mnist_vae.py", False),
                                        ("mnist_conv_vae.py", True),
                                        ("mnist_ae.py", False)])
def test_only_convolutional_models_keep_tree_reductions(name, tree,
                                                        monkeypatch):
  config = config_lib.get_config(os.path.join(REPO, "configs", name))
  asked = []
  monkeypatch.setattr(compiler, "jit",
                      lambda fn, **kwargs: asked.append(kwargs))
  train.chunk_program(config, step_fn=None, binarization="dynamic")
  ctx = common.Context(configs=[config], model=None, objective=None,
                       data=None, mesh=None)
  assert asked[0]["tree_reductions"] is ctx.convolutional is tree


@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="XLA:CPU's LLVM optimization level")
@pytest.mark.parametrize("name, overrides", [
    ("mnist_vae.py", {"model.hidden": (64, 32), "model.latent_dim": 8}),
    ("mnist_conv_vae.py", {"model.conv_channels": (8, 16),
                           "model.hidden": (32,), "model.latent_dim": 4})])
def test_llvm_level_1_computes_the_bits_of_the_default_level_3(name,
                                                               overrides):
  # The run's programs compile at LLVM -O1 (`compiler.options`). At -O3,
  # XLA's default (set here: the tests' XLA_FLAGS set level 1), with the
  # other options the same: the same initial state and, after three train
  # steps, the same parameters and Adam moments, bit for bit; the metric
  # sums agree to rounding (XLA vectorizes some sums at -O3).
  config = config_lib.get_config(os.path.join(REPO, "configs", name), None,
                                 overrides)
  options = compiler.options(models.is_convolutional(config.model))
  assert options["xla_backend_optimization_level"] == 1
  model, objective, tx, schedule = train.build_model(config, (28, 28, 1), 100)
  keys = steps.Keys.from_seed(config.seed)
  init = functools.partial(steps.create_train_state, model=model, tx=tx,
                           event_shape=(28, 28, 1))
  chunk = functools.partial(
      steps.train_chunk, step_fn=train.model_step(objective, tx, schedule),
      binarization="dynamic", data_seed=0)
  images = jax.random.randint(jax.random.key(1), (3, 32, 28, 28, 1), 0, 256
                              ).astype(jnp.uint8)
  out = {}
  default = compiler.XLA_DEFAULT_LEVEL  # 3
  for level in (1, default):
    opts = {**options, "xla_backend_optimization_level": level}
    state = jax.jit(init, compiler_options=opts)(
        keys.init, keys.loop, steps.hparams_of(config))
    sums = {m: jnp.zeros(1) for m in steps.metric_names(
        objective, steps.stack([state]), (32, 28, 28, 1))}
    trained, sums, finite = jax.jit(chunk, compiler_options=opts)(
        steps.stack([state]), images, jnp.int32(3), jnp.int32(0), sums,
        jnp.bool_(True))
    assert bool(finite) and int(trained.step[0]) == 3
    out[level] = state, trained, sums
  for i in (0, 1):  # The initial state, the trained state.
    leaves = jax.tree.leaves(out[1][i])
    assert len(leaves) == len(jax.tree.leaves(out[default][i])) > 4
    for a, b in zip(leaves, jax.tree.leaves(out[default][i])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(jax.tree.leaves(out[1][0].params)[-1],
                            jax.tree.leaves(out[1][1].params)[-1][0])
  for m, v in out[1][2].items():
    np.testing.assert_allclose(v, out[default][2][m], rtol=1e-5, err_msg=m)
