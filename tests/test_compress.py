"""Bits-back coding (vae_jax.bbans): exact round trips at the -ELBO's rate.

The model is the session's small trained run (conftest's `trained_small`,
shared with test_train.py); its binarized test images are what is coded.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from conftest import run_module
from vae_jax import bbans
from vae_jax import bbans_counts
from vae_jax import bbans_file
from vae_jax import config_lib
from vae_jax import losses
from vae_jax import models
from vae_jax import trained
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError

NUM_IMAGES = 300


@pytest.fixture(scope="module")
def model(trained_small):  # pylint: disable=redefined-outer-name
  return trained.load(trained_small.workdir)


def _codec(m, params=None, **settings):
  return bbans.Codec(m.model, m.params if params is None else params,
                     m.event_shape, bbans.Settings(**settings))


def _cli(module, *args):
  return run_module(module, args)


def _assert_one_clear_error(result, words):
  assert result.returncode == 2, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = [l for l in result.stderr.splitlines() if l.startswith("vae_jax:")]
  assert len(lines) == 1, result.stderr
  for word in words:
    assert word in lines[0], lines[0]


# ----------------------------------------------------------------------------
# The discretized latents.


def test_buckets_have_equal_prior_mass():
  edges = bbans_counts.bucket_edges(4)
  assert edges[0] == -np.inf and edges[-1] == np.inf
  np.testing.assert_allclose(np.diff(special.ndtr(edges)), 1 / 16,
                             rtol=1e-12)
  centres = bbans_counts.bucket_centres(4)
  assert np.all((centres > edges[:-1]) & (centres < edges[1:]))


def test_posterior_counts_are_the_gaussian_mass_of_each_bucket():
  mean = np.array([[0.0, 1.3, -2.5, 0.2]], np.float32)
  log_var = np.log(np.array([[1.0, 0.01, 0.3, 4.0]], np.float32))
  counts = np.asarray(bbans_counts.posterior_counts(mean, log_var, 6, 20))
  assert counts.shape == (1, 4, 64) and counts.dtype == np.int32
  np.testing.assert_array_equal(counts.sum(-1), 2**20)
  assert counts.min() >= 1  # Every bucket stays codable.
  edges = bbans_counts.bucket_edges(6)
  sigma = np.exp(0.5 * log_var.astype(np.float64))
  mass = np.diff(special.ndtr((edges[None, None] - mean[..., None])
                              / sigma[..., None]), axis=-1)
  # floor(mass (2^P - K)) + 1 is within 1 count of mass (2^P - K) (float32
  # arithmetic adds ~1e-7); the likeliest bucket also takes the remainder,
  # at most K counts.
  error = np.abs(counts / 2**20 - mass)
  top = mass > mass.max(axis=-1, keepdims=True) - 1e-6  # Ties in float32.
  assert np.all(error[~top] < (mass[~top] * 64 + 1.5) / 2**20)
  assert error[top].max() <= 65 / 2**20
  # q = prior gives the uniform distribution over buckets.
  np.testing.assert_allclose(counts[0, 0] / 2**20, 1 / 64, atol=1e-5)


def test_draw_cost_is_the_entropy_in_bits():
  counts = np.full((1, 3, 16), 2**16, np.int32)  # Uniform: 4 bits per unit.
  mean, var = bbans_counts.draw_cost(counts, 20)
  np.testing.assert_allclose(mean, [12.0], rtol=1e-6)
  np.testing.assert_allclose(var, [0.0], atol=1e-4)


def test_settings_are_checked():
  for bad in (dict(latent_bits=0), dict(latent_bits=13),
              dict(latent_bits=8, posterior_precision=9),
              dict(posterior_precision=25), dict(block_size=0)):
    with pytest.raises(UserError, match="compress"):
      bbans.Settings(**bad).validate()


def test_a_workdir_from_before_compression_gets_its_defaults(tmp_path):
  old = config_lib.base().to_dict()
  del old["evals"]["compress"]  # As written before this evaluator existed.
  (tmp_path / "config.json").write_text(json.dumps(old))
  config = workdir_lib.load_config(str(tmp_path))
  assert config.evals.compress.to_dict() == (
      config_lib.base().evals.compress.to_dict())


# ----------------------------------------------------------------------------
# Round trips.


def test_round_trip_is_exact_at_the_elbo_rate(model):
  x = model.test_images(NUM_IMAGES)  # float32 {0, 1}, [N, 28, 28, 1]
  codec = _codec(model)
  data, stats = codec.compress(x)
  decoded, dec_stats = codec.decompress(data)
  assert decoded.dtype == x.dtype and decoded.shape == x.shape
  np.testing.assert_array_equal(decoded, x)
  # The -ELBO of the same images in bits, averaged over 8 latent samples.
  nelbo = np.mean([model.score(x, seed=s)["nelbo"] for s in range(8)],
                  axis=0)
  elbo_bits = float(np.sum(nelbo, dtype=np.float64)) / np.log(2)
  expected = elbo_bits + stats.initial_bits
  assert abs(stats.payload_bits - expected) <= 0.02 * expected, (
      stats.to_dict(), elbo_bits)
  # Bits back are real: without them each image would cost its latents'
  # latent_bits x Z bits more than -ELBO.
  assert stats.payload_bits < elbo_bits + 0.5 * (
      8 * codec.latent_dim * NUM_IMAGES)
  # A few clean bits start the chain: about one image's posterior draw.
  assert 0 < stats.initial_bits <= 32 * 8 * codec.latent_dim
  assert stats.file_bytes == len(data)
  assert dec_stats.payload_bits == stats.payload_bits
  header = bbans_file.read_header(data)
  assert sum(header["block_sizes"]) == NUM_IMAGES
  assert header["block_sizes"][0] < max(header["block_sizes"])  # The ramp.


@pytest.mark.parametrize("layout", ["uint8_255", "bool_hw"])
def test_round_trip_keeps_dtype_and_shape(model, layout):
  x = model.data.test_x[:37]  # uint8 {0, 255}, [37, 28, 28, 1]
  if layout == "bool_hw":
    x = x[..., 0] > 0
  codec = _codec(model, block_size=16)
  decoded, _ = codec.decompress(codec.compress(x)[0])
  assert decoded.dtype == x.dtype and decoded.shape == x.shape
  np.testing.assert_array_equal(decoded, x)


def test_refuses_gray_images_and_other_shapes(model):
  codec = _codec(model)
  gray = model.data.test_x[:4].copy()
  gray[0, 0, 0, 0] = 128
  with pytest.raises(UserError, match="not binary"):
    codec.compress(gray)
  with pytest.raises(UserError, match=r"images \[14, 56, 1\]"):
    codec.compress(np.zeros((2, 14, 56, 1), np.uint8))


def test_another_model_or_a_corrupted_file_is_an_error(model):
  x = model.data.test_x[:20]
  data, _ = _codec(model).compress(x)
  other = jax.tree.map(lambda a: a * 1.01, model.params)
  with pytest.raises(UserError, match="another model"):
    _codec(model, other).decompress(data)
  corrupted = bytearray(data)
  corrupted[len(data) // 2] ^= 1
  with pytest.raises(UserError, match="corrupted"):
    _codec(model).decompress(bytes(corrupted))
  with pytest.raises(UserError, match="not a file written"):
    _codec(model).decompress(b"\x89PNG\r\n" + data[6:])


def test_evaluator_codes_the_test_set_at_the_elbo_rate(model, trained_small):  # pylint: disable=redefined-outer-name
  config = workdir_lib.load_config(trained_small.workdir)
  config.evals.nll.enabled = config.evals.images.enabled = False
  config.evals.compress.enabled = True
  config.evals.compress.num_examples = 200
  out = trained.load(trained_small.workdir,
                     config=config).evaluate()["compress"]
  nelbo = np.mean([model.score(model.test_images(200), seed=s)["nelbo"]
                   for s in range(8)])
  elbo_bpd = nelbo / (784 * np.log(2))
  assert out.metrics["net_bits_per_dim"] == pytest.approx(elbo_bpd, rel=0.02)
  assert (out.metrics["file_bits_per_dim"]
          > out.metrics["net_bits_per_dim"])
  assert out.metrics["decode_images_per_s"] > 0
  assert out.about["num_coded"] == 200


def test_eight_bit_images_round_trip_at_the_elbo_rate():
  """A discretized Gaussian decoder codes uint8 pixels (an untrained model:
  exactness and the rate do not depend on training)."""
  config = config_lib.base().model
  config.hidden, config.latent_dim = (64,), 4
  config.likelihood, config.learn_scale = "discretized_gaussian", "per_pixel"
  # A wide scale: every level keeps a probability well above constriction's
  # floor of 2^-24, where the coder would pay less than the model's
  # -log p (an untrained decoder is far from most images).
  config.gaussian_scale = 1.0
  event_shape = (8, 8, 1)
  model = models.create_model(config, event_shape)
  params = models.init_params(model, jax.random.key(0), event_shape)
  # Images drawn from the model, so that their pixels lie where it puts
  # mass (a level out at 1e-7 would cost constriction's 24-bit floor).
  z = jax.random.normal(jax.random.key(2), (60, config.latent_dim))
  likelihood = model.apply(params, z, method="decode")
  noise = jax.random.normal(jax.random.key(3), likelihood.loc.shape)
  x = np.asarray(jnp.clip(jnp.round(255 * (
      likelihood.loc + jnp.exp(likelihood.log_scale) * noise)), 0, 255)
                 ).astype(np.uint8)
  codec = bbans.Codec(model, params, event_shape,
                      bbans.Settings(block_size=16))
  data, stats = codec.compress(x)
  decoded, _ = codec.decompress(data)
  assert decoded.dtype == np.uint8
  np.testing.assert_array_equal(decoded, x)
  # -ELBO in bits: 64 latent draws of -log p(x|z) + KL, per image.
  inputs = x.astype(np.float32) / 255
  q = model.apply(params, inputs, method="encode")
  z = losses.reparameterize(jax.random.key(1), q.mean, q.log_var, 64)
  recon = -model.apply(params, z, method="decode").log_prob(inputs).mean(0)
  kl = losses.kl_to_std_normal(q.mean, q.log_var).sum(-1)
  elbo_bits = float(np.sum(recon + kl)) / np.log(2)
  expected = elbo_bits + stats.initial_bits
  assert abs(stats.payload_bits - expected) <= 0.02 * expected, (
      stats.to_dict(), elbo_bits)
  with pytest.raises(UserError, match="uint8"):
    codec.compress(x.astype(np.float32))


# ----------------------------------------------------------------------------
# The command lines.


def test_cli_round_trip_and_clear_errors(model, trained_small, tmp_path):  # pylint: disable=redefined-outer-name
  x = model.data.test_x[:NUM_IMAGES]
  src, packed, out = (str(tmp_path / n)
                      for n in ("in.npz", "in.vae", "out.npz"))
  np.savez(src, x=x, y=np.arange(NUM_IMAGES))
  workdir = f"--workdir={trained_small.workdir}"
  result = _cli("vae_jax.compress", workdir, f"--input={src}",
                f"--output={packed}")
  assert result.returncode == 0, result.stderr
  assert "bits/dim net" in result.stdout and "-ELBO" in result.stdout
  result = _cli("vae_jax.decompress", workdir, f"--input={packed}",
                f"--output={out}")
  assert result.returncode == 0, result.stderr
  with np.load(out) as f:
    np.testing.assert_array_equal(f["x"], x)
    assert f["x"].dtype == np.uint8

  data = open(packed, "rb").read()
  corrupted = tmp_path / "corrupted.vae"
  corrupted.write_bytes(data[:100] + bytes([data[100] ^ 4]) + data[101:])
  _assert_one_clear_error(
      _cli("vae_jax.decompress", workdir, f"--input={corrupted}",
           f"--output={out}"), ["corrupted"])
  _assert_one_clear_error(
      _cli("vae_jax.decompress", workdir, f"--input={src}",
           f"--output={out}"), ["not a file written by vae_jax.compress"])
  foreign = tmp_path / "other_model.vae"
  other = jax.tree.map(lambda a: a * 1.01, model.params)
  foreign.write_bytes(_codec(model, other).compress(x[:10])[0])
  _assert_one_clear_error(
      _cli("vae_jax.decompress", workdir, f"--input={foreign}",
           f"--output={out}"), ["another model"])
