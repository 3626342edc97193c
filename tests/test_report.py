"""The run report: what it lists, that its images decode, its command line.

The session's small run on scikit-learn's digits (conftest `DIGITS_VAE`:
an MLP VAE, every figure evaluator, the NLL at k = 10) wrote its report
while it trained; the tests read a copy of it, rebuild it and check it.
"""

import base64
import io
import json
import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

from conftest import run_module
from vae_jax import report
from vae_jax.errors import UserError


@pytest.fixture(scope="module")
def run(trained_digits, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("report") / "run")
  shutil.copytree(trained_digits, workdir)
  return workdir


def _decode(data: bytes):
  with Image.open(io.BytesIO(data)) as im:
    im.load()
    return im.size


def _index(workdir):
  with open(os.path.join(workdir, "images", "index.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_report_lists_every_evaluators_figures_and_they_decode(run):
  with open(os.path.join(run, "report.md")) as f:
    md = f.read()
  linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
  # Every figure an evaluator drew: its latest step shown, under its
  # evaluator's heading; earlier steps linked.
  entries = _index(run)
  evaluators = {e["evaluator"] for e in entries}
  assert evaluators == {"images", "latent_maps"}
  for e in entries:
    latest = max(x["step"] for x in entries if x["name"] == e["name"])
    assert f"images/{e['name']}_{latest:08d}.png" in linked
    assert f"images/{e['file']}" in md
  for name in evaluators:
    assert f"### {name}\n" in md
  assert "report_curves.png" in linked
  for path in linked:
    with open(os.path.join(run, path), "rb") as f:
      width, height = _decode(f.read())
    assert width > 10 and height > 10
  # The HTML embeds the same images, each decodable.
  with open(os.path.join(run, "report.html")) as f:
    page = f.read()
  embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
  assert len(embedded) == len(linked)
  for data in embedded:
    _decode(base64.b64decode(data))
  assert "src=\"images/" not in page  # Nothing to fetch: opens alone.


def test_report_shows_how_numbers_were_estimated_and_the_command(run):
  with open(os.path.join(run, "report.md")) as f:
    md = f.read()
  with open(os.path.join(run, "results.json")) as f:
    results = json.load(f)
  assert f"| nll | {results['nll']['nll']:.6g} |" in md
  assert "| num_samples | 10 |" in md
  assert "| num_examples | 359 |" in md
  assert "| binarization | fixed, seed 0 |" in md
  assert "| estimator | importance sampling, k=10" in md
  assert "| split | held-out 20% of the examples" in md
  # How to run it again: the command line and the code version.
  with open(os.path.join(run, "provenance.jsonl")) as f:
    start = json.loads(f.readline())
  assert start["command"] in md and "Code version: " in md
  assert start["git_commit"] is None or start["git_commit"] in md
  assert "| model.latent_dim | 3 |" in md


def test_command_line_rebuilds_it_and_refuses_a_missing_workdir(run,
                                                                tmp_path):
  os.remove(os.path.join(run, "report.html"))
  proc = run_module("vae_jax.report", [f"--workdir={run}"])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert os.path.isfile(os.path.join(run, "report.html"))
  missing = str(tmp_path / "nope")
  proc = run_module("vae_jax.report", [f"--workdir={missing}"])
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      f"vae_jax: Workdir {missing} does not exist.")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(UserError, match="neither a run"):
    report.write(str(empty))


def test_sweep_report_links_its_points(run, tmp_path):
  sweep = tmp_path / "sweep"
  for name in ("000_a", "001_b"):
    shutil.copytree(run, sweep / name)
    os.remove(sweep / name / "report.html")
  report.write(str(sweep))
  with open(sweep / "report.md") as f:
    md = f.read()
  assert "2 of 2 points finished." in md
  assert "[000_a](000_a/report.md)" in md and "[001_b](001_b/report.md)" in md
  with open(sweep / "report.html") as f:
    assert 'href="001_b/report.html"' in f.read()
  assert os.path.isfile(sweep / "000_a" / "report.html")  # Built for it.
  assert os.path.isfile(sweep / "summary.md")


def _chromium():
  for name in ("chromium", "chromium-browser", "google-chrome", "chrome",
               "headless_shell"):
    if shutil.which(name):
      return shutil.which(name)
  return None


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium here")
def test_report_renders_in_headless_chromium(run, tmp_path):
  url = "file://" + os.path.abspath(os.path.join(run, "report.html"))
  proc = subprocess.run(
      [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
       "--virtual-time-budget=10000", "--dump-dom", url],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  # The page's script ran (no script error) and every image decoded.
  match = re.search(r'data-images-ok="(\d+)/(\d+)"', proc.stdout)
  assert match, proc.stdout[:2000]
  assert match[1] == match[2] and int(match[2]) > 5
