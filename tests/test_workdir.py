"""A run's directory: config compatibility, checkpoints, results, events."""

import io
import json
import struct

import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from vae_jax import config_lib
from vae_jax import models
from vae_jax import optim
from vae_jax import steps
from vae_jax import workdir as workdir_lib
from vae_jax import writers
from vae_jax.errors import UserError

EVENT = (4, 4, 1)


def _changed(value):
  """A different value of the same type."""
  if isinstance(value, bool):
    return not value
  if isinstance(value, (int, float)):
    return value * 2 + 1
  if isinstance(value, str):
    return value + "x"
  if isinstance(value, tuple):
    return (*value, 3)
  raise TypeError(value)


# --- config -------------------------------------------------------------------


def test_config_round_trips_through_the_workdir(tmp_path):
  with pytest.raises(UserError, match="no config.json"):
    workdir_lib.load_config(str(tmp_path))
  config = config_lib.base()
  workdir_lib.write_config(str(tmp_path), config)
  assert config_lib.differences(workdir_lib.load_config(str(tmp_path)),
                                config) == []


def test_check_compatible_refuses_a_changed_model_field(tmp_path):
  w = str(tmp_path)
  config = config_lib.base()
  workdir_lib.check_compatible(config, w)  # No run there yet.
  workdir_lib.write_config(w, config)
  workdir_lib.check_compatible(config, w)
  changed = config_lib.base()
  changed.model.latent_dim = 8
  with pytest.raises(UserError, match=r"model\.latent_dim \(50 -> 8\)"):
    workdir_lib.check_compatible(changed, w)
  changed = config_lib.base()
  changed.model.hidden = (500,)
  with pytest.raises(UserError, match=r"model\.hidden"):
    workdir_lib.check_compatible(changed, w)


def test_check_compatible_accepts_resumable_changes_only(tmp_path):
  w = str(tmp_path)
  config = config_lib.base()
  workdir_lib.write_config(w, config)
  flat = config_lib.flatten(config)
  resumable = [k for k in flat
               if k.startswith(workdir_lib.RESUMABLE_CHANGES)]
  # Every entry names fields that exist (a section, or one field).
  for entry in workdir_lib.RESUMABLE_CHANGES:
    assert any(k.startswith(entry) if entry.endswith(".") else k == entry
               for k in flat), entry
  # All resumable changes at once are accepted ...
  changed = config_lib.base()
  for key in resumable:
    config_lib.set_field(changed, key, _changed(flat[key]))
  workdir_lib.check_compatible(changed, w)
  # ... and a change to any other field is refused.
  for key in sorted(set(flat) - set(resumable)):
    changed = config_lib.base()
    value = tuple(flat[key]) if isinstance(flat[key], list) else flat[key]
    config_lib.set_field(changed, key, _changed(value))
    with pytest.raises(UserError, match="different config"):
      workdir_lib.check_compatible(changed, w)


# --- checkpoints --------------------------------------------------------------


def _train_state(latent_dim=3, hidden=(8,), seed=0):
  config = config_lib.base()
  config.model.hidden, config.model.latent_dim = hidden, latent_dim
  config.seed = seed
  model = models.create_model(config.model, EVENT)
  tx, _ = optim.create(config.optimizer, 10)
  keys = steps.Keys.from_seed(seed)
  state = steps.create_train_state(keys.init, keys.loop,
                                   steps.hparams_of(config), model=model,
                                   tx=tx, event_shape=EVENT)
  return model, state


def _params_like(latent_dim=3, hidden=(8,)):
  config = config_lib.base()
  config.model.hidden, config.model.latent_dim = hidden, latent_dim
  model = models.create_model(config.model, EVENT)
  return jax.eval_shape(
      lambda: models.init_params(model, jax.random.key(0), EVENT))


def _assert_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """A workdir with one tiny model's train state saved at steps 5 and 10."""
  w = str(tmp_path_factory.mktemp("run"))
  _, state = _train_state(seed=1)
  later = state.replace(step=state.step + 10,
                        params=jax.tree.map(lambda p: p + 1, state.params))
  manager = workdir_lib.checkpoint_manager(w)
  workdir_lib.save(manager, 5, state.replace(step=state.step + 5))
  workdir_lib.save(manager, 10, later)
  manager.wait_until_finished()
  manager.close()
  return w, state, later


def test_restore_gives_back_the_saved_state(saved):
  w, _, later = saved
  manager = workdir_lib.checkpoint_manager(w)
  _, fresh = _train_state(seed=2)  # Same shapes, other values.
  restored = workdir_lib.restore(manager, 10, fresh)
  _assert_equal(restored, later)
  assert int(restored.step) == 10
  # One model's unstacked state, the fields of steps.TrainState.
  raw = manager.restore(10, args=ocp.args.StandardRestore())
  assert set(raw) == {"step", "params", "opt_state", "rng", "hparams"}
  assert np.shape(raw["step"]) == ()


def test_restore_params_only_checks_shapes(saved):
  w, state, later = saved
  manager = workdir_lib.checkpoint_manager(w)
  like = _params_like()
  params = workdir_lib.restore(manager, 10, like, params_only=True)
  _assert_equal(params, later.params)
  assert jax.tree.map(lambda a: a.dtype, params) == jax.tree.map(
      lambda a: a.dtype, like)
  _assert_equal(workdir_lib.restore(manager, 5, like, params_only=True),
                state.params)
  # Another latent size (same tree, other shapes) or another depth (other
  # tree) is refused, not reshaped or half-filled.
  for other in (_params_like(latent_dim=4), _params_like(hidden=(8, 8))):
    with pytest.raises(UserError, match="step 10.*does not match"):
      workdir_lib.restore(manager, 10, other, params_only=True)


def test_checkpoint_steps_creates_nothing(saved, tmp_path):
  missing = tmp_path / "missing"
  assert workdir_lib.checkpoint_steps(str(missing)) == []
  assert not missing.exists()
  empty = tmp_path / "empty"
  empty.mkdir()
  assert workdir_lib.checkpoint_steps(str(empty)) == []
  assert list(empty.iterdir()) == []
  assert workdir_lib.checkpoint_steps(saved[0]) == [5, 10]


# --- results ------------------------------------------------------------------


def test_is_done_once_results_are_written(tmp_path):
  w = str(tmp_path)
  assert not workdir_lib.is_done(w)
  workdir_lib.write_config(w, config_lib.base())
  assert not workdir_lib.is_done(w)  # A config alone: started, not done.
  results = {"step": 10, "dataset": "mnist",
             "elbo": {"nelbo": 99.5, "split": "test"}}
  workdir_lib.write_results(w, results)
  assert workdir_lib.is_done(w)
  assert workdir_lib.read_results(w) == results
  assert not workdir_lib.is_done(str(tmp_path / "missing"))


def test_a_config_from_an_older_schema_is_one_sentence(tmp_path):
  old = config_lib.base().to_dict()
  del old["evals"]  # As written before the evaluators existed.
  (tmp_path / "config.json").write_text(json.dumps(old))
  with pytest.raises(UserError, match="older vae_jax.*evals"):
    workdir_lib.load_config(str(tmp_path))


def test_tensorboard_events_hold_the_scalars_and_images(tmp_path):
  # TensorBoard's own reader (it may import TensorFlow: only here).
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  w = writers.MetricWriter(str(tmp_path), resume_step=0)
  w.write_scalars(10, {"train/loss": 2.5, "train/kl": np.float32(0.25)})
  w.write_scalars(20, {"train/loss": 1.5})
  gray = np.linspace(0.0, 1.0, 12, dtype=np.float32).reshape(3, 4, 1)
  w.write_images(20, {"samples": gray}, evaluator="images")
  w.close()
  events = event_accumulator.EventAccumulator(str(tmp_path / "tb"))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
      (10, 2.5), (20, 1.5)]
  assert [e.value for e in events.Scalars("train/kl")] == [0.25]
  (image,) = events.Images("samples")
  assert (image.step, image.height, image.width) == (20, 3, 4)
  decoded = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  np.testing.assert_array_equal(decoded, np.round(gray[..., 0] * 255))
  # The same steps in metrics.jsonl; the PNG beside it.
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").open()]
  assert rows == [{"step": 10, "train/loss": 2.5, "train/kl": 0.25},
                  {"step": 20, "train/loss": 1.5}]
  assert (tmp_path / "images" / "samples_00000020.png").exists()

  # Every record is framed and checksummed as TFRecords are: tensorboard's
  # own (pure-Python) masked CRC-32C of the length and of the data.
  from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # pylint: disable=g-import-not-at-top
  (path,) = (tmp_path / "tb").iterdir()
  data, records = path.read_bytes(), 0
  while data:
    (length,) = struct.unpack("<Q", data[:8])
    (header_crc,) = struct.unpack("<I", data[8:12])
    (data_crc,) = struct.unpack("<I", data[12 + length:16 + length])
    assert header_crc == pywrap_tensorflow.masked_crc32c(data[:8])
    assert data_crc == pywrap_tensorflow.masked_crc32c(data[12:12 + length])
    data, records = data[16 + length:], records + 1
  assert records == 4  # The file version, two scalar events, the image.


def test_masked_crc32c_is_tensorflows():
  # CRC-32C's published check value: "123456789" -> 0xe3069283 (RFC 3720,
  # B.4); masked, ((c >> 15) | (c << 17)) + 0xa282ead8 mod 2^32.
  c = 0xE3069283
  assert writers.masked_crc32c(b"123456789") == (
      ((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF
  from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # pylint: disable=g-import-not-at-top
  data = np.random.default_rng(0).bytes(5000)
  for n in (0, 1, 8, 100, 5000):
    assert writers.masked_crc32c(data[:n]) == pywrap_tensorflow.masked_crc32c(
        data[:n])
