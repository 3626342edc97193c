"""The tests' own machinery (conftest.py): which commands fork from the
fork server, and that they run as `python -m` would run them."""

import json
import os
import subprocess
import sys

import pytest

import conftest

# Prints what starting JAX's backend and importing scikit-learn and
# TensorFlow write to the process's environment.
_IMPORTS = """
import json, os
before = dict(os.environ)
import jax, sklearn, tensorflow
jax.devices()
print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))
"""

_PROBE = """
import json, os, sys
print(json.dumps({"ppid": os.getppid(), "argv": sys.argv[1:],
                  "probe": os.environ.get("VAE_JAX_PROBE"),
                  "xla": os.environ.get("XLA_FLAGS")}))
sys.exit(3)
"""


@pytest.fixture
def fork_server(monkeypatch):
  """A fork server started before the imports wrote to the environment."""
  written = json.loads(subprocess.run(
      [sys.executable, "-c", _IMPORTS], env={"PATH": os.environ["PATH"]},
      capture_output=True, text=True, check=True).stdout)
  assert written  # TF_CPP_MIN_LOG_LEVEL, KMP_*, TF2_BEHAVIOR...
  with monkeypatch.context() as m:
    for key in written:
      m.delenv(key, raising=False)
    server = conftest._ForkServer()  # pylint: disable=protected-access
  monkeypatch.setattr(conftest, "_fork_server", server)
  for key, value in written.items():
    monkeypatch.setenv(key, value)
  yield server
  server.proc.stdin.close()
  server.proc.wait(timeout=60)


def _probe(tmp_path, env=None):
  (tmp_path / "probe.py").write_text(_PROBE)
  out = conftest.run_module("probe", ["a", "b"], env=env, cwd=str(tmp_path))
  assert out.returncode == 3, out.stderr[-2000:]
  return json.loads(out.stdout)


def test_what_jax_and_imports_write_to_the_environment_still_forks(
    fork_server, tmp_path, monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert _probe(tmp_path) == {"ppid": fork_server.proc.pid, "argv": ["a", "b"],
                              "probe": None, "xla": None}
  # What the child reads when it starts the backend: forked, and it sees it.
  assert _probe(tmp_path, env={"XLA_FLAGS": "--xla_dump_to=x"}) == {
      "ppid": fork_server.proc.pid, "argv": ["a", "b"], "probe": None,
      "xla": "--xla_dump_to=x"}
  # A variable the server's imports may have read: a new process gets it.
  monkeypatch.setenv("VAE_JAX_PROBE", "1")
  assert _probe(tmp_path) == {"ppid": os.getpid(), "argv": ["a", "b"],
                              "probe": "1", "xla": None}
