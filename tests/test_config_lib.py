"""The config schema: base(), config files, their arguments, flat views."""

import glob
import os

import jax
import pytest

from conftest import REPO
from vae_jax import config_lib
from vae_jax import evaluators
from vae_jax import models
from vae_jax import objectives
from vae_jax import optim
from vae_jax import steps
from vae_jax.errors import UserError

CONFIG_FILES = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))


# --- base() -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_base_defines_every_field_each_module_reads(kind):
  config = config_lib.base(kind)
  # A locked config refuses to read or add a field it does not have: what
  # `config_flags` hands to a run.
  config.lock()
  config_lib.validate(config)
  # What the run builds from each section reads only fields base() defines.
  model = models.create_model(config.model, (28, 28, 1))
  models.init_params(model, jax.random.key(0), (28, 28, 1))
  objectives.create(config.objective, model)
  optim.create(config.optimizer, 100)
  assert set(steps.hparams_of(config)) == set(steps.hparam_fields(config))
  # Every objective's and every evaluator's fields are there, whichever is
  # chosen.
  for name, fields in objectives.HPARAMS.items():
    assert set(fields) <= set(config.objective), name
  assert set(config.evals) == set(evaluators.REGISTRY)
  config_lib.runlocal(config)
  config_lib.validate(config)


def test_base_ae_is_the_vae_base_with_an_autoencoder():
  vae, ae = config_lib.base(), config_lib.base("ae")
  assert not models.is_vae(ae.model) and ae.objective.name == "ae"
  assert not ae.evals.nll.enabled  # An autoencoder has no likelihood.
  assert config_lib.differences(vae, ae) == [
      "data.binarization", "evals.ae_pca.enabled", "evals.elbo.every_steps",
      "evals.images.every_steps", "evals.latent_maps.every_steps",
      "evals.nll.enabled", "model.hidden",
      "model.latent_dim", "model.name", "objective.name",
      "optimizer.warmup_steps", "training.num_epochs"]
  with pytest.raises(ValueError, match="kind"):
    config_lib.base("gan")


# --- config-file arguments ----------------------------------------------------


def test_parse_arg_parses_flags_and_values():
  assert not config_lib.parse_arg(None, runlocal=False).runlocal
  assert not config_lib.parse_arg("", runlocal=False).runlocal
  assert config_lib.parse_arg("runlocal", runlocal=False).runlocal
  arg = config_lib.parse_arg("runlocal,latent=8,beta=0.5", runlocal=False,
                             latent=4, beta=1.0, tag="")
  assert arg.runlocal is True
  assert arg.latent == 8 and isinstance(arg.latent, int)
  assert arg.beta == 0.5 and arg.tag == ""
  assert config_lib.parse_arg("runlocal=false", runlocal=True).runlocal is False
  with pytest.raises(UserError, match="latent=.*not a int"):
    config_lib.parse_arg("latent=eight", latent=4)


def test_unknown_config_argument_is_a_user_error_naming_it():
  with pytest.raises(UserError, match="'bogus'"):
    config_lib.parse_arg("runlocal,bogus", runlocal=False)
  # Through a config file, as `--config=configs/mnist_vae.py:bogus` does.
  path = os.path.join(REPO, "configs", "mnist_vae.py")
  with pytest.raises(UserError, match="'runlokal'"):
    config_lib.get_config(path, "runlokal")


# --- config files -------------------------------------------------------------


def test_configs_directory_has_the_configs():
  names = {os.path.basename(p) for p in CONFIG_FILES}
  assert {"mnist_vae.py", "mnist_ae.py", "sweep_beta_latent.py"} <= names


@pytest.mark.parametrize("path", CONFIG_FILES, ids=os.path.basename)
def test_every_config_file_loads_and_validates(path):
  full = config_lib.get_config(path)
  local = config_lib.get_config(path, "runlocal")
  for config in (full, local):
    config_lib.validate(config)
    # Config files change fields of base(); they add or drop none.
    assert set(config_lib.flatten(config)) == set(
        config_lib.flatten(config_lib.base()))
  # runlocal is applied last, over the file's own settings.
  config_lib.runlocal(full)
  assert config_lib.differences(full, local) == []
  assert local.training.num_epochs < 1


# --- flat views and JSON ------------------------------------------------------


def test_flatten_differences_and_from_json_round_trip_tuples():
  config = config_lib.base()
  config.model.conv_channels = ()  # An empty tuple survives too.
  flat = config_lib.flatten(config)
  assert flat["model.hidden"] == [500, 500]  # As JSON writes it.
  assert flat["evals.nll.num_samples"] == 5000  # Nested sections.
  back = config_lib.from_json(config.to_json())
  assert config_lib.differences(config, back) == []
  assert config_lib.flatten(back) == flat
  # A JSON list and its tuple are the same field value.
  back.model.hidden = [500, 500]
  assert config_lib.differences(config, back) == []

  other = config_lib.from_json(config.to_json())
  other.model.hidden = (500,)
  other.evals.nll.num_samples = 10
  other.training.log_every_steps = 7
  assert config_lib.differences(config, other) == [
      "evals.nll.num_samples", "model.hidden", "training.log_every_steps"]
  # An ignored name ending in "." is a whole section; others are one field.
  assert config_lib.differences(
      config, other, ("evals.", "training.log_every_steps")) == [
          "model.hidden"]


def test_from_json_restores_tuples():
  config = config_lib.base()
  config.model.conv_channels = ()
  back = config_lib.from_json(config.to_json())
  assert isinstance(back.model.hidden, tuple)
  assert back.model.hidden == (500, 500)
  assert isinstance(back.model.conv_channels, tuple)
  assert back.model.conv_channels == ()


def test_set_field_sets_existing_fields_and_refuses_missing_ones():
  config = config_lib.base()
  config.lock()
  config_lib.set_field(config, "model.latent_dim", 3)
  config_lib.set_field(config, "evals.nll.num_samples", 7)
  assert config.model.latent_dim == 3 and config.evals.nll.num_samples == 7
  for key in ("model.latnet_dim", "modle.latent_dim", "evals.nll.k", "sed"):
    with pytest.raises(UserError, match=repr(key)):
      config_lib.set_field(config, key, 1)
  # The overrides of get_config go through it.
  path = os.path.join(REPO, "configs", "mnist_vae.py")
  with pytest.raises(UserError, match="'eval.num_importance_samples'"):
    config_lib.get_config(path, None, {"eval.num_importance_samples": 10})


def test_set_field_of_the_wrong_type_is_one_sentence():
  config = config_lib.base()
  with pytest.raises(UserError, match="model.latent_dim holds a int"):
    config_lib.set_field(config, "model.latent_dim", 2.5)
