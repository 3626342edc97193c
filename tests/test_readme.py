"""The README's commands and code work as written.

Every `python -m vae_jax.main` / `vae_jax.sweep` command in the README is
parsed into its config and overrides and validated (a renamed field or a
removed flag fails here); the short ones run for real with `:runlocal`; the
"Adding an evaluator" example is executed, registered and run.
"""

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import types

import pytest

from conftest import REPO, SMALL, cli_args
from vae_jax import config_lib
from vae_jax import evaluators
from vae_jax import train
from vae_jax import trained

with open(os.path.join(REPO, "README.md")) as _f:
  README = _f.read()


def _commands() -> list[list[str]]:
  """Each `-m vae_jax.X` command of the README, as argv after the module."""
  text = README.replace("\\\n", " ")
  found = re.findall(r"python -m (vae_jax\.\w+)([^`\n|]*)", text)
  return [[module, *shlex.split(args)] for module, args in found
          if args.strip() not in ("", "...")]  # Prose mentions.


CODEC_MODULES = ("vae_jax.compress", "vae_jax.decompress")
CODEC_COMMANDS = [c for c in _commands() if c[0] in CODEC_MODULES]
COMMANDS = [c for c in _commands() if c[0] not in CODEC_MODULES]


def _value(text: str):
  if text in ("True", "true", "False", "false"):
    return text.lower() == "true"
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def test_readme_names_only_existing_commands():
  modules = {c[0] for c in COMMANDS}
  assert modules <= {"vae_jax.main", "vae_jax.sweep", "vae_jax.report"}, modules
  assert len(COMMANDS) >= 10
  assert "vae_jax.evaluate" not in README
  assert CODEC_COMMANDS  # The Compression section's.


@pytest.mark.parametrize("argv", CODEC_COMMANDS,
                         ids=lambda c: " ".join(c)[:80])
def test_readme_codec_commands_use_known_flags(argv):
  module, *args = argv
  flags = {a[2:].partition("=")[0] for a in args}
  assert flags <= {"workdir", "input", "output", "mode", "latent_bits",
                   "posterior_precision", "block_size"}, (module, flags)
  assert {"workdir", "input", "output"} <= flags, argv


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda c: " ".join(c)[:80])
def test_readme_command_flags_and_config_are_valid(argv):
  module, *args = argv
  if module == "vae_jax.report":  # A workdir only: no config.
    assert [a.partition("=")[0] for a in args] == ["--workdir"], argv
    return
  allowed = {"config", "workdir", "mode", "list", "index", "summarize",
             "coordinator_address", "num_processes", "process_id",
             "distributed"}
  path, overrides = None, {}
  for arg in args:
    if arg.startswith("--config."):
      key, _, value = arg[len("--config."):].partition("=")
      # As config_flags parses: by the type of the field it sets.
      is_str = isinstance(config_lib.flatten(config_lib.base()).get(key), str)
      overrides[key] = value if is_str else _value(value)
    elif arg.startswith("--"):
      name, _, value = arg[2:].partition("=")
      assert name in allowed, f"unknown flag --{name} in {module}"
      if name == "config":
        path = value
      if name == "mode":
        assert value in ("train", "eval")
  assert path is not None, argv
  file, _, arg = path.partition(":")
  config = config_lib.get_config(os.path.join(REPO, file), arg or None,
                                 overrides)
  config_lib.validate(config)


def test_first_command_and_eval_mode_run_with_runlocal(tmp_path):
  """The README's main command (shrunk) trains; its --mode=eval rescores."""
  workdir = str(tmp_path / "w")
  shrink = cli_args({**SMALL, "data.eval_split": "test[:500]",
                     "training.num_epochs": 0.05})
  base = [sys.executable, "-m", "vae_jax.main",
          "--config=configs/mnist_vae.py:runlocal", f"--workdir={workdir}"]
  out = subprocess.run(base + shrink, cwd=REPO, capture_output=True,
                       text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  out = subprocess.run(
      base + ["--mode=eval", "--config.evals.nll.num_samples=5000"] + shrink
      + ["--config.evals.nll.num_samples=20"], cwd=REPO,
      capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["nll"]["num_samples"] == 20


def test_adding_an_evaluator_example_runs(tmp_path, monkeypatch):
  section = README[README.index("## Adding an evaluator"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  module = types.ModuleType("latent_usage")
  exec(compile(code, "README:latent_usage", "exec"), module.__dict__)  # pylint: disable=exec-used
  monkeypatch.setitem(evaluators.REGISTRY, "latent_usage", module.Evaluator)

  config = config_lib.get_config(
      os.path.join(REPO, "configs", "mnist_vae.py"), None,
      {**SMALL, "training.num_epochs": 0.05, "evals.nll.enabled": False,
       "data.eval_split": "test[:500]"})
  with config.evals.unlocked():
    config.evals.latent_usage = {"enabled": True, "every_steps": 0}
  workdir = str(tmp_path)
  final = train.train_and_evaluate(config, workdir)
  usage = final["latent_usage"]["abs_mean_per_unit"]
  assert len(usage) == config.model.latent_dim
  assert all(u >= 0 for u in usage) and max(usage) > 0
  # The Python API runs the same object on the restored parameters.
  again = trained.load(workdir).evaluate()["latent_usage"]
  assert again.metrics["abs_mean_per_unit"] == pytest.approx(usage, rel=1e-6)
