"""Atomic writes (vae_jax/files.py): the old file or the new one, never part
of one."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from vae_jax import files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_writes_replace_the_file_and_leave_nothing_beside_it(tmp_path):
  path = str(tmp_path / "results.json")
  files.write_json(path, {"nll": 88.9}, indent=2)
  files.write_json(path, {"nll": 85.0})
  with open(path) as f:
    assert json.load(f) == {"nll": 85.0}
  # The path is used as given: np.savez would add ".npz" to a name.
  npz = str(tmp_path / "pca.bin")
  files.save_npz(npz, mean=np.arange(3.0), n=np.int64(7))
  with np.load(npz) as f:
    np.testing.assert_array_equal(f["mean"], [0.0, 1.0, 2.0])
    assert int(f["n"]) == 7
  assert sorted(os.listdir(tmp_path)) == ["pca.bin", "results.json"]


def test_an_error_mid_write_keeps_the_old_file(tmp_path):
  path = str(tmp_path / "config.json")
  files.write_text(path, "old")
  with pytest.raises(ValueError, match="half"):
    with files.atomic(path) as f:
      f.write("ne")
      raise ValueError("half written")
  with open(path) as f:
    assert f.read() == "old"
  assert os.listdir(tmp_path) == ["config.json"]  # The temporary is gone.


def test_a_killed_writer_leaves_the_old_file(tmp_path):
  path = str(tmp_path / "results.json")
  files.write_text(path, '{"step": 10}')
  code = (f"from vae_jax import files\nimport os, signal\n"
          f"with files.atomic({path!r}) as f:\n"
          f"  f.write('{{\"step\": 2'); f.flush()\n"
          f"  os.kill(os.getpid(), signal.SIGKILL)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False)
  assert out.returncode == -signal.SIGKILL
  with open(path) as f:
    assert json.load(f) == {"step": 10}
