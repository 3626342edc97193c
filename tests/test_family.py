"""The autoencoder family: new loss terms, corruptions, models and the API.

Loss terms are checked against values written out by hand in float64 numpy
from their textbook formulas; models by the shapes and behaviour that define
them.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import small_config
from vae_jax import config_lib
from vae_jax import corruption
from vae_jax import layers
from vae_jax import losses
from vae_jax import models
from vae_jax import objectives
from vae_jax import train
from vae_jax import trained
from vae_jax.errors import UserError


# --- loss terms ---------------------------------------------------------------


def test_free_bits_floors_each_unit_by_its_batch_mean():
  kl = np.array([[0.1, 2.0, 0.0],
                 [0.3, 1.0, 0.2]], np.float32)
  # Batch means per unit: 0.2, 1.5, 0.1. With a floor of 0.25 units 0 and 2
  # are under it: each example pays 0.25 for them, and its own KL for unit 1.
  got = np.asarray(losses.free_bits_kl(jnp.asarray(kl), 0.25))
  np.testing.assert_allclose(got, [0.25 + 2.0 + 0.25, 0.25 + 1.0 + 0.25],
                             rtol=1e-6)
  # The batch mean is sum_d max(floor, mean KL_d) = 0.25 + 1.5 + 0.25.
  assert np.isclose(got.mean(), 2.0)
  # Units under the floor get no gradient; the one above gets 1 / B each.
  grad = jax.grad(lambda k: jnp.mean(losses.free_bits_kl(k, 0.25)))(
      jnp.asarray(kl))
  np.testing.assert_allclose(grad, [[0, 0.5, 0], [0, 0.5, 0]])
  # Floor 0 is the plain KL.
  np.testing.assert_allclose(losses.free_bits_kl(jnp.asarray(kl), 0.0),
                             kl.sum(-1), rtol=1e-6)


def test_kl_warmup_ramps_linearly_to_beta():
  weights = [float(losses.kl_warmup_weight(4.0, jnp.int32(s), 100))
             for s in (0, 25, 50, 100, 1000)]
  assert weights == pytest.approx([0.0, 1.0, 2.0, 4.0, 4.0])
  assert float(losses.kl_warmup_weight(4.0, jnp.int32(0), 0)) == 4.0


def test_psnr_and_squared_error_by_hand():
  x = np.zeros((2, 2, 2, 1), np.float32)
  y = x.copy()
  y[0, 0, 0, 0] = 0.2  # MSE 0.04 / 4 = 0.01 -> 20 dB.
  y[1] = 0.5  # MSE 0.25 -> 10 log10(4) = 6.0206 dB.
  mse = losses.squared_error(jnp.asarray(y), jnp.asarray(x), event_ndim=3)
  np.testing.assert_allclose(mse, [0.01, 0.25], rtol=1e-6)
  np.testing.assert_allclose(losses.psnr(mse), [20.0, 10 * math.log10(4)],
                             rtol=1e-5)
  # An exact reconstruction is finite (the MSE floor 1e-10: 100 dB).
  assert float(losses.psnr(jnp.float32(0.0))) == pytest.approx(100.0)


def test_l1_and_bernoulli_kl_sparsity_by_hand():
  code = np.array([[0.1, 0.3], [0.3, 0.5]], np.float32)
  np.testing.assert_allclose(losses.l1_penalty(jnp.asarray(-code)),
                             [0.4, 0.8], rtol=1e-6)
  rho = 0.05
  rho_hat = code.mean(0).astype(np.float64)  # 0.2, 0.4
  expected = sum(rho * math.log(rho / r) + (1 - rho) * math.log(
      (1 - rho) / (1 - r)) for r in rho_hat)
  got = np.asarray(losses.sparsity_penalty(jnp.asarray(code), rho))
  np.testing.assert_allclose(got, [expected, expected], rtol=1e-5)
  # KL(rho || rho) = 0, and the penalty grows as rho_hat leaves rho.
  assert float(losses.bernoulli_kl(rho, jnp.float32(rho))) == pytest.approx(
      0.0, abs=1e-7)
  assert float(losses.bernoulli_kl(rho, jnp.float32(0.5))) > float(
      losses.bernoulli_kl(rho, jnp.float32(0.1))) > 0
  # A dead unit (rho_hat = 0) has a finite penalty and is pushed back up.
  slope = jax.grad(lambda r: losses.bernoulli_kl(rho, r))(jnp.float32(0.0))
  assert np.isfinite(float(losses.bernoulli_kl(rho, jnp.float32(0.0))))
  assert float(slope) < -1e3
  # Codes that are not sigmoid outputs (penalty weight 0) stay finite.
  for r in (-0.5, 1.5):
    assert np.isfinite(float(losses.bernoulli_kl(rho, jnp.float32(r))))
    assert np.isfinite(float(jax.grad(
        lambda r: losses.bernoulli_kl(rho, r))(jnp.float32(r))))


def test_gaussian_likelihood_with_fixed_scale_is_mse_plus_constants():
  # The documented link:
  # -log p = ||x - mu||^2 / (2 s^2) + D (log s + log(2 pi) / 2).
  rng = np.random.default_rng(0)
  x, mu = rng.random((3, 10)), rng.random((3, 10))
  s = 0.3
  got = -losses.gaussian_log_prob(jnp.asarray(x, jnp.float32),
                                  jnp.asarray(mu, jnp.float32),
                                  jnp.float32(math.log(s)), event_ndim=1)
  expected = (((x - mu)**2).sum(-1) / (2 * s * s)
              + 10 * (math.log(s) + 0.5 * math.log(2 * math.pi)))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


# --- corruptions --------------------------------------------------------------


def test_corruptions_have_their_rates_and_ranges():
  x = jnp.full((200, 28, 28, 1), 0.5, jnp.float32)
  key = jax.random.key(0)
  noisy = np.asarray(corruption.corrupt("gaussian", x, key, 0.5))
  assert noisy.min() >= 0.0 and noisy.max() <= 1.0
  # Clipping N(0.5, 0.5^2) to [0, 1] leaves P(|eps| < 0.5) = 68.3% inside.
  inside = np.mean((noisy > 0) & (noisy < 1))
  assert abs(inside - 0.6827) < 0.01
  masked = np.asarray(corruption.corrupt("masking", x, key, 0.3))
  assert abs(np.mean(masked == 0.0) - 0.3) < 0.01
  assert set(np.unique(masked)) == {0.0, 0.5}
  sp = np.asarray(corruption.corrupt("salt_and_pepper", x, key, 0.2))
  assert abs(np.mean(sp != 0.5) - 0.2) < 0.01
  assert abs(np.mean(sp == 1.0) - 0.1) < 0.01
  assert corruption.corrupt("none", x, key, 0.0) is x
  # Same key, same corruption: what makes resumes bit-identical.
  np.testing.assert_array_equal(
      noisy, corruption.corrupt("gaussian", x, key, 0.5))


@pytest.mark.parametrize("name, level, message", [
    ("blur", 0.1, "Unknown objective.corruption"),
    ("gaussian", 0.0, "sigma"),
    ("masking", 1.5, "rate"),
])
def test_bad_corruption_is_refused(name, level, message):
  with pytest.raises(UserError, match=message):
    corruption.validate(name, level)


# --- models -------------------------------------------------------------------


def _model_config(**overrides) -> ml_collections.ConfigDict:
  return small_config(**{f"model.{k}": v for k, v in overrides.items()}).model


@pytest.mark.parametrize("event_shape", [(28, 28, 1), (32, 32, 3), (27, 30, 2)])
@pytest.mark.parametrize("name", ["conv_vae", "conv_ae"])
def test_conv_models_follow_the_data_shape(name, event_shape):
  config = _model_config(name=name, conv_channels=(8, 16), hidden=(32,))
  model = models.create_model(config, event_shape)
  # Shapes only: eager execution of the patch convolutions is slow.
  params = jax.eval_shape(
      lambda: models.init_params(model, jax.random.key(0), event_shape))
  x = jax.ShapeDtypeStruct((3, *event_shape), jnp.float32)
  apply = lambda method: jax.eval_shape(
      lambda p, v: model.apply(p, v, method=method), params,
      x if method == "reconstruct" else z)
  z = jax.ShapeDtypeStruct((5, 3, config.latent_dim), jnp.float32)
  assert apply("reconstruct").shape == (3, *event_shape)
  # Leading sample axes decode too.
  assert apply("decode").loc.shape == (5, 3, *event_shape)
  kernels = [k for k in params["params"]["encoder"] if "conv" in k]
  assert kernels == ["conv_0", "conv_1"]


def test_learned_scale_starts_at_its_value_and_keeps_its_floor():
  for learn, shape in (("global", ()), ("per_pixel", (4, 4, 1))):
    scale = models.OutputScale((4, 4, 1), 0.1, learn, 0.01)
    params = scale.init(jax.random.key(0))
    assert params["params"]["raw_scale"].shape == shape
    np.testing.assert_allclose(np.exp(scale.apply(params)), 0.1, rtol=1e-5)
    # However far training pushes the raw parameter, sigma stays >= floor.
    low = jax.tree.map(lambda p: p - 1e4, params)
    np.testing.assert_allclose(np.exp(scale.apply(low)), 0.01, rtol=1e-5)
  fixed = models.OutputScale((4, 4, 1), 0.3, "none", 0.01)
  assert fixed.init(jax.random.key(0)) == {}
  assert float(fixed.apply({})) == pytest.approx(math.log(0.3))


def test_sigmoid_code_autoencoder_encodes_into_the_unit_interval():
  config = _model_config(name="mlp_ae", code_activation="sigmoid",
                         latent_dim=6)
  model = models.create_model(config, (28, 28, 1))
  params = models.init_params(model, jax.random.key(0), (28, 28, 1))
  code = model.apply(params, jnp.ones((2, 28, 28, 1)), method="encode")
  assert code.shape == (2, 6)
  assert np.all((np.asarray(code) > 0) & (np.asarray(code) < 1))


@pytest.mark.parametrize("overrides, message", [
    ({"model.name": "mlp_ae"}, "autoencoder"),
    ({"model.name": "mlp_vae", "model.code_activation": "sigmoid"},
     "code_activation"),
    ({"model.likelihood": "bernoulli", "model.learn_scale": "global"},
     "learn_scale"),
    ({"model.likelihood": "gaussian", "model.learn_scale": "global",
      "model.min_scale": 2.0}, "min_scale"),
    ({"objective.free_bits": -1.0}, "free_bits"),
    ({"model.name": "resnet_vae"}, "Unknown model.name"),
])
def test_bad_model_and_objective_combinations_are_refused(overrides, message):
  config = small_config(**overrides)
  with pytest.raises(UserError, match=message):
    config_lib.validate(config)


def test_sparsity_penalty_needs_sigmoid_codes():
  config = small_config(**{"model.name": "mlp_ae", "objective.name": "ae",
                           "objective.sparsity_weight": 1.0,
                           "evals.nll.enabled": False})
  with pytest.raises(UserError, match="sigmoid"):
    config_lib.validate(config)
  config.model.code_activation = "sigmoid"
  config_lib.validate(config)


# --- objectives ---------------------------------------------------------------


def _ae_objective_config(**overrides):
  config = config_lib.base("ae").objective
  config.update(overrides)
  return config


def test_ae_objective_adds_its_terms_and_reconstructs_the_clean_input():
  model_config = _model_config(name="mlp_ae", code_activation="sigmoid",
                               latent_dim=5, hidden=(16,))
  model = models.create_model(model_config, (4, 4, 1))
  params = models.init_params(model, jax.random.key(1), (4, 4, 1))
  x = jax.random.uniform(jax.random.key(2), (8, 4, 4, 1))
  o = _ae_objective_config(corruption="gaussian", noise_level=0.3,
                           l1_weight=0.5, sparsity_weight=2.0)
  objective = objectives.create(o, model)
  rng = jax.random.key(3)
  loss, m = objective(params, x, rng,
                      {k: jnp.float32(v)
                       for k, v in objectives.hparams(o).items()})
  # By hand from the model's pieces: encode the corrupted x, score clean x.
  x_in = corruption.corrupt("gaussian", x, rng, 0.3)
  code = model.apply(params, x_in, method="encode")
  likelihood = model.apply(params, code, method="decode")
  recon = -np.asarray(losses.bernoulli_log_prob(likelihood.loc, x, 3))
  l1 = 0.5 * np.abs(np.asarray(code)).sum(-1)
  rho_hat = np.asarray(code, np.float64).mean(0)
  kl = np.sum(0.05 * np.log(0.05 / rho_hat)
              + 0.95 * np.log(0.95 / (1 - rho_hat)))
  np.testing.assert_allclose(m["recon"], recon, rtol=1e-5)
  np.testing.assert_allclose(m["l1"], l1, rtol=1e-5)
  np.testing.assert_allclose(m["sparsity"], 2.0 * kl, rtol=1e-4)
  np.testing.assert_allclose(loss, recon + l1 + 2.0 * kl, rtol=1e-5)
  mse = np.mean((np.asarray(likelihood.mean()) - np.asarray(x))**2,
                axis=(1, 2, 3))
  np.testing.assert_allclose(m["psnr"], 10 * np.log10(1 / mse), rtol=1e-4)
  mse_in = np.mean((np.asarray(x_in) - np.asarray(x))**2, axis=(1, 2, 3))
  np.testing.assert_allclose(m["psnr_input"], 10 * np.log10(1 / mse_in),
                             rtol=1e-4)
  np.testing.assert_allclose(m["code_mean"], np.asarray(code).mean(-1),
                             rtol=1e-5)
  assert set(m) == {"loss", "recon", "mse", "psnr", "psnr_input", "l1",
                    "sparsity", "code_mean", "code_near_zero"}


def test_elbo_warmup_scales_the_kl_in_training_only():
  config = small_config(**{"objective.kl_warmup_steps": 100,
                           "objective.beta": 2.0})
  model = models.create_model(config.model, (28, 28, 1))
  params = models.init_params(model, jax.random.key(0), (28, 28, 1))
  objective = objectives.create(config.objective, model)
  x = jnp.full((4, 28, 28, 1), 0.5)
  rng = jax.random.key(1)
  h = {"beta": jnp.float32(2.0)}
  full, m = objective(params, x, rng, h)
  np.testing.assert_allclose(full, m["recon"] + 2.0 * m["kl"], rtol=1e-6)
  early, m_early = objective(params, x, rng, h, step=jnp.int32(25))
  np.testing.assert_allclose(early, m["recon"] + 0.5 * m["kl"], rtol=1e-6)
  # The reported bound is the unweighted one, whatever the warm-up.
  np.testing.assert_allclose(m_early["nelbo"], m["recon"] + m["kl"],
                             rtol=1e-6)
  done, _ = objective(params, x, rng, h, step=jnp.int32(1000))
  np.testing.assert_allclose(done, full, rtol=1e-6)


# --- the Python API -----------------------------------------------------------


def test_trained_api_loads_a_workdir_and_matches_the_run(tmp_path):
  config = small_config(**{"training.num_epochs": 0.05,
                           "evals.nll.enabled": False})
  final = train.train_and_evaluate(config, str(tmp_path))
  m = trained.load(str(tmp_path))
  assert m.is_vae and m.step == train.schedule_length(config, 60000)[1]
  x = m.test_images()
  scores = m.score(x)
  # The run's test -ELBO, up to the latent samples' Monte Carlo noise.
  assert scores["nelbo"].shape == (10000,)
  assert abs(np.mean(scores["nelbo"]) - final["elbo"]["nelbo"]) < 0.5
  posterior = m.encode(x[:4])
  assert posterior.mean.shape == (4, config.model.latent_dim)
  recon = m.reconstruct(x[:4])
  np.testing.assert_allclose(
      recon, m.decode(posterior.mean).mean(), rtol=1e-5, atol=1e-6)
  assert m.sample(3).shape == (3, 28, 28, 1)
  # uint8 pixels are scaled the same way.
  np.testing.assert_allclose(m.reconstruct((x[:4] * 255).astype(np.uint8)),
                             recon, rtol=1e-5, atol=1e-6)
  with pytest.raises(UserError, match="Expected inputs"):
    m.reconstruct(np.zeros((2, 784)))
  with pytest.raises(UserError, match="no checkpoint at step"):
    trained.load(str(tmp_path), step=7)


@pytest.mark.parametrize("shape, kernel, stride", [
    ((2, 28, 28, 1), (4, 4), 2), ((2, 7, 7, 5), (3, 3), 1),
    ((3, 27, 30, 2), (4, 4), 2), ((1, 5, 6, 3), (3, 3), 2)])
def test_patch_conv_equals_flax_conv(shape, kernel, stride):
  x = jax.random.normal(jax.random.key(0), shape)
  ours = layers.Conv(6, kernel, stride)
  params = ours.init(jax.random.key(1), x)
  reference = nn.Conv(6, kernel, strides=stride, padding="SAME")
  # Same parameter names and shapes, so the same initializer draws the same
  # values from the same key.
  ref_params = reference.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape,
                                                          ref_params)
  np.testing.assert_allclose(params["params"]["kernel"],
                             ref_params["params"]["kernel"])
  np.testing.assert_allclose(ours.apply(params, x),
                             reference.apply(params, x), rtol=1e-5, atol=1e-5)


def test_depth_to_space_interleaves_the_phases():
  x = jnp.arange(2 * 1 * 1 * 4).reshape(2, 1, 1, 4)
  np.testing.assert_array_equal(layers.depth_to_space(x)[0, :, :, 0],
                                [[0, 1], [2, 3]])


def test_mlp_vae_keeps_the_parameter_layout_of_saved_checkpoints():
  # Runs saved before the model family existed restore into this tree.
  config = _model_config(hidden=(16, 8))
  params = models.init_params(models.create_model(config, (28, 28, 1)),
                              jax.random.key(0), (28, 28, 1))["params"]
  assert jax.tree.map(jnp.shape, params) == {
      "encoder": {"hidden_0": {"kernel": (784, 16), "bias": (16,)},
                  "hidden_1": {"kernel": (16, 8), "bias": (8,)},
                  "mean": {"kernel": (8, 8), "bias": (8,)},
                  "log_var": {"kernel": (8, 8), "bias": (8,)}},
      "decoder": {"hidden_0": {"kernel": (8, 8), "bias": (8,)},
                  "hidden_1": {"kernel": (8, 16), "bias": (16,)},
                  "loc": {"kernel": (16, 784), "bias": (784,)}}}
