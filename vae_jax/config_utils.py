"""Loading config files outside the command line (tests, sweeps, notebooks)."""

import importlib.util
import os
import types
from typing import Any

import ml_collections

from vae_jax.errors import UserError


def load_module(path: str) -> types.ModuleType:
  """Imports a config file such as `configs/mnist_vae.py` as a module."""
  if not os.path.isfile(path):
    raise UserError(f"Config file {path} does not exist.")
  name = "vae_jax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(path: str, arg: str | None = None,
               overrides: dict[str, Any] | None = None
               ) -> ml_collections.ConfigDict:
  """`get_config(arg)` of the file at `path`, with dotted-field overrides."""
  config = load_module(path).get_config(arg)
  for key, value in (overrides or {}).items():
    set_field(config, key, value)
  return config


def set_field(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets `a.b.c` in `config`; the field must already exist."""
  *parents, leaf = key.split(".")
  node = config
  for p in parents:
    if p not in node:
      raise UserError(f"Config has no field {key!r}.")
    node = node[p]
  if leaf not in node:
    raise UserError(f"Config has no field {key!r}.")
  with node.unlocked():
    node[leaf] = value
