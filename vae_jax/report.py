r"""The run report: `report.html` and `report.md`, from a workdir's files.

  python -m vae_jax.report --workdir=DIR

rebuilds them at any time from what the run wrote (training writes them at
its end, `--mode=eval` after scoring):

  - how to reproduce the run: the command line and code version of each
    start (`provenance.jsonl`), and the whole config (`config.json`);
  - the final numbers of every evaluator with how each was estimated
    (estimator, k, binarization, split, number of examples: the labels
    evaluators write beside their metrics in `results.json`);
  - training curves from `metrics.jsonl` (loss, -ELBO, KL, reconstruction,
    PSNR, learning rate against step, train and eval): `report_curves.png`;
  - every evaluator's figures from `images/`, grouped by the evaluator that
    drew them (`images/index.jsonl`), the latest of each figure shown and
    the earlier ones linked. A new evaluator's figures appear with no
    report code.

`report.html` embeds its figures (base64 PNG: it opens from disk, alone);
`report.md` links the files next to it. A sweep's directory (points in
subdirectories, `vae_jax.sweep`) gets a report of its summary table and
plots (`vae_jax.sweep_report`) that links each point's report.
"""

import base64
import collections
import datetime
import glob
import html
import json
import os
import re
from typing import Any

from absl import app
from absl import flags
import jax

from vae_jax import cli
from vae_jax import config_lib
from vae_jax import workdir as workdir_lib
from vae_jax import writers
from vae_jax.errors import UserError

HTML, MARKDOWN, CURVES = "report.html", "report.md", "report_curves.png"
# Labels of how a number was obtained that are numbers themselves.
LABEL_FIELDS = ("num_examples", "num_samples", "chunk_size",
                "num_latent_samples", "active_unit_threshold",
                "pca_components")
# Curves: panel title -> the metrics.jsonl keys drawn in it, if present.
CURVE_PANELS = {
    "loss": ("train/loss", "elbo/loss"),
    "-ELBO and IS-NLL [nats]": ("train/nelbo", "elbo/nelbo", "nll/nll"),
    "KL(q(z|x) || p(z)) [nats]": ("train/kl", "elbo/kl"),
    "reconstruction -log p(x|z) [nats]": ("train/recon", "elbo/recon"),
    "PSNR [dB]": ("train/psnr", "elbo/psnr"),
    "learning rate": ("train/learning_rate",),
}
_IMAGE_FILE = re.compile(r"^(?P<name>.+)_(?P<step>\d{8})\.png$")


def write(workdir: str) -> str:
  """Writes the report of a run's or a sweep's directory (process 0).

  Returns:
    The path of `report.html`.

  Raises:
    UserError: `workdir` does not exist, or holds neither a run
      (`config.json`) nor a sweep (points with `config.json`).
  """
  if not os.path.isdir(workdir):
    raise UserError(f"Workdir {workdir} does not exist.")
  path = os.path.join(workdir, HTML)
  if jax.process_index() != 0:
    return path
  if os.path.isfile(os.path.join(workdir, workdir_lib.CONFIG)):
    _write_run_report(workdir)
  elif _sweep_points(workdir):
    _write_sweep_report(workdir)
  else:
    raise UserError(f"Workdir {workdir} holds neither a run "
                    f"({workdir_lib.CONFIG}) nor a sweep's points: give the "
                    "workdir of a training run or a sweep.")
  return path


# ----------------------------------------------------------------------------
# A document: a list of blocks written both as Markdown and as HTML.


class _Doc:
  """Blocks of a report, rendered as Markdown and as self-contained HTML."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.md, self.html = [], []

  def heading(self, text: str, level: int = 2) -> None:
    self.md.append(f"{'#' * level} {text}\n")
    self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

  def para(self, text: str, code: bool = False) -> None:
    if code:
      self.md.append(f"```\n{text}\n```\n")
      self.html.append(f"<pre>{html.escape(text)}</pre>")
    else:
      self.md.append(text + "\n")
      self.html.append(f"<p>{html.escape(text)}</p>")

  def table(self, header: list[str], rows: list[list[Any]],
            links: dict[int, str] | None = None) -> None:
    """A table; `links` maps a column to a format of the link of its cells
    (`"{}/report.html"`), for HTML, and to `.md` for Markdown."""
    links = links or {}
    cell = lambda v: "" if v is None else (f"{v:.6g}" if isinstance(v, float)
                                           else str(v))
    md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    body = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                    for h in header) + "</tr>"]
    for r in rows:
      md_cells, html_cells = [], []
      for j, v in enumerate(r):
        text = cell(v).replace("|", "\\|").replace("\n", " ")
        if j in links:
          md_cells.append(f"[{text}]({links[j].format(v).replace('.html', '.md')})")
          html_cells.append(f'<a href="{html.escape(links[j].format(v))}">'
                            f"{html.escape(cell(v))}</a>")
        else:
          md_cells.append(text)
          html_cells.append(html.escape(cell(v)))
      md.append("| " + " | ".join(md_cells) + " |")
      body.append("<tr>" + "".join(f"<td>{c}</td>" for c in html_cells)
                  + "</tr>")
    self.md.append("\n".join(md) + "\n")
    self.html.append("\n".join(body) + "</table>")

  def image(self, rel_path: str, caption: str) -> None:
    """A PNG (`rel_path` from the workdir): linked in Markdown, embedded in
    HTML."""
    with open(os.path.join(self.workdir, rel_path), "rb") as f:
      data = base64.b64encode(f.read()).decode("ascii")
    self.md.append(f"![{caption}]({rel_path})\n")
    self.html.append(
        f'<figure><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(caption)}" data-file="{html.escape(rel_path)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>")

  def links(self, label: str, paths: list[str]) -> None:
    """Relative links to files (earlier steps of a figure)."""
    if not paths:
      return
    self.md.append(f"{label}: " + ", ".join(
        f"[{os.path.basename(p)}]({p})" for p in paths) + "\n")
    self.html.append(f"<p class=small>{html.escape(label)}: " + ", ".join(
        f'<a href="{html.escape(p)}">{html.escape(os.path.basename(p))}</a>'
        for p in paths) + "</p>")

  def details(self, summary: str, header: list[str],
              rows: list[list[Any]]) -> None:
    """A table folded away in HTML (`<details>`), plain in Markdown."""
    self.html.append(f"<details><summary>{html.escape(summary)}</summary>")
    self.para(summary + ":")
    self.html.pop()  # The HTML has the summary line already.
    self.table(header, rows)
    self.html.append("</details>")

  def save(self, title: str) -> None:
    with open(os.path.join(self.workdir, MARKDOWN), "w") as f:
      f.write("\n".join(self.md))
    with open(os.path.join(self.workdir, HTML), "w") as f:
      f.write(f"<!doctype html>\n<html><head><meta charset=utf-8>"
              f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
              "</head><body>\n" + "\n".join(self.html) + "\n"
              f"<script>{_CHECK_IMAGES}</script></body></html>\n")


# Marks the page once loaded: `data-images-ok="N/M"` images decoded (a
# headless browser's test reads it, `tests/test_report.py`).
_CHECK_IMAGES = ("window.addEventListener('load',function(){var i=document"
                 ".images,n=0;for(var k=0;k<i.length;k++)if(i[k].complete&&"
                 "i[k].naturalWidth>0)n++;document.body.setAttribute("
                 "'data-images-ok',n+'/'+i.length);});")
_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;"
        "padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;"
        "text-align:left}pre{background:#f4f4f4;padding:.6em;overflow-x:auto;"
        "white-space:pre-wrap}img{max-width:100%}figure{margin:1em 0}"
        "figcaption{font-size:12px;color:#555}.small{font-size:12px}")


# ----------------------------------------------------------------------------
# A run.


def _write_run_report(workdir: str) -> None:
  config = workdir_lib.load_config(workdir)
  results = (workdir_lib.read_results(workdir)
             if workdir_lib.is_done(workdir) else {})
  title = f"Run report: {os.path.basename(os.path.abspath(workdir))}"
  doc = _Doc(workdir)
  doc.heading(title, 1)
  doc.para(f"{config.model.name} (latent {config.model.latent_dim}, "
           f"objective {config.objective.name}) on "
           f"{results.get('dataset', config.data.name)}; "
           + (f"final step {results['step']}." if results
              else "not finished (no results.json yet).")
           + " Generated " + datetime.datetime.now(
               datetime.timezone.utc).isoformat(timespec="seconds") + ".")

  doc.heading("Reproduce")
  starts = workdir_lib.read_provenance(workdir)
  if starts:
    first = starts[0]
    doc.para("The command that started this run (run it again on a new "
             "workdir to reproduce it; on this workdir it resumes):")
    doc.para(first["command"], code=True)
    doc.para(f"Code version: {_version(first)}.")
    if len(starts) > 1:
      doc.table(["later start", "command", "code version"],
                [[s.get("started"), s["command"], _version(s)]
                 for s in starts[1:]])
  else:
    doc.para("The command line was not recorded (a run from before "
             f"{workdir_lib.PROVENANCE} existed); the config below is "
             "complete.")
  doc.details("Config (config.json)", ["field", "value"],
              [[k, json.dumps(v)] for k, v in
               sorted(config_lib.flatten(config).items())])

  doc.heading("Final metrics")
  sections = {k: v for k, v in results.items() if isinstance(v, dict)}
  if not sections:
    doc.para("No results yet.")
  for name, fields in sections.items():
    doc.heading(f"{name}", 3)
    numbers = [[k, _number(v)] for k, v in fields.items()
               if k not in LABEL_FIELDS and not isinstance(v, str)]
    labels = [[k, v] for k, v in fields.items()
              if k in LABEL_FIELDS or isinstance(v, str)]
    doc.table(["metric", "value"], numbers)
    if labels:
      doc.table(["how it was estimated", ""], labels)

  doc.heading("Training curves")
  if _plot_curves(workdir):
    doc.image(CURVES, "Training (lines) and evaluation (markers) metrics "
              "against step, from metrics.jsonl")
  else:
    doc.para("No metrics.jsonl yet.")

  doc.heading("Figures")
  groups = figures_by_evaluator(workdir)
  if not groups:
    doc.para("No figures in images/.")
  for evaluator, names in groups.items():
    doc.heading(evaluator, 3)
    for name, files in names.items():
      step, latest = files[-1]
      doc.image(f"images/{latest}", f"{name} at step {step}")
      doc.links(f"{name} at earlier steps",
                [f"images/{f}" for _, f in files[:-1]])
  doc.save(title)


def _version(start: dict) -> str:
  commit = start.get("git_commit")
  if not commit:
    return "unknown (not a git checkout)"
  return commit + (" with local changes" if start.get("git_dirty") else "")


def _number(v):
  if isinstance(v, list):
    shown = ", ".join(f"{x:.4g}" if isinstance(x, float) else str(x)
                      for x in v[:8])
    return f"[{shown}{', ...' if len(v) > 8 else ''}] ({len(v)} values)"
  return v


def figures_by_evaluator(workdir: str
                         ) -> dict[str, dict[str, list[tuple[int, str]]]]:
  """`{evaluator: {figure name: [(step, file)] by step}}` of `images/`.

  The evaluator of a file comes from `images/index.jsonl`
  (`writers.write_image_files`); files it does not name (runs from before
  the index) are grouped under "images" by their name `<name>_<step>.png`.
  Only files that exist are listed.
  """
  folder = os.path.join(workdir, "images")
  owner = {}
  index = os.path.join(folder, writers.IMAGE_INDEX)
  if os.path.isfile(index):
    with open(index) as f:
      for line in filter(str.strip, f):
        entry = json.loads(line)
        owner[entry["file"]] = entry["evaluator"] or "images"
  groups = collections.defaultdict(lambda: collections.defaultdict(list))
  for path in sorted(glob.glob(os.path.join(folder, "*.png"))):
    file = os.path.basename(path)
    match = _IMAGE_FILE.match(file)
    if not match:
      continue
    groups[owner.get(file, "images")][match["name"]].append(
        (int(match["step"]), file))
  return {e: {n: sorted(fs) for n, fs in names.items()}
          for e, names in groups.items()}


def _plot_curves(workdir: str) -> bool:
  """Writes report_curves.png from metrics.jsonl; False if nothing to plot."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return False
  series = collections.defaultdict(list)
  with open(path) as f:
    for line in filter(str.strip, f):
      row = json.loads(line)
      for k, v in row.items():
        if k != "step":
          series[k].append((row["step"], v))
  panels = {t: [k for k in keys if series.get(k)]
            for t, keys in CURVE_PANELS.items()}
  panels = {t: keys for t, keys in panels.items() if keys}
  if not panels:
    return False
  plt = writers.pyplot()
  cols = min(3, len(panels))
  rows = -(-len(panels) // cols)
  width, height = 4.3 * cols, 3.0 * rows
  fig, axes = plt.subplots(rows, cols, figsize=(width, height), dpi=100,
                           squeeze=False)
  # Fixed margins (inches) for the tick labels, titles and axis labels:
  # tight_layout would draw the figure once more to measure them.
  left, right, bottom, top, gap_x, gap_y = 0.6, 0.15, 0.45, 0.3, 0.7, 0.8
  fig.subplots_adjust(
      left=left / width, right=1 - right / width, bottom=bottom / height,
      top=1 - top / height,
      wspace=gap_x * cols / (width - left - right - gap_x * (cols - 1)),
      hspace=gap_y * rows / (height - bottom - top - gap_y * (rows - 1)))
  for ax, (title, keys) in zip(axes.reshape(-1), panels.items()):
    for k in keys:
      steps, values = zip(*sorted(dict(series[k]).items()))
      style = "-" if k.startswith("train/") else "o-"
      ax.plot(steps, values, style, label=k, markersize=3)
    writers.set_title(ax, title, fontsize=9)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    # At most 5 ticks an axis: matplotlib builds each tick's artists at
    # every draw (~2 ms a tick here), and with its default ~8 this figure
    # took 0.89 s to draw instead of 0.60 s.
    ax.locator_params(nbins=4)
    ax.legend(fontsize=7)
    if title.startswith(("-ELBO", "reconstruction", "loss")):
      _zoom(ax, [v for k in keys for _, v in series[k]])
  for ax in axes.reshape(-1)[len(panels):]:
    ax.axis("off")
  fig.savefig(os.path.join(workdir, CURVES))
  plt.close(fig)
  return True


def _zoom(ax, values) -> None:
  """Clips the first steps' large losses so the end of training shows."""
  values = sorted(v for v in values if v == v)
  if len(values) > 4:
    lo, hi = values[0], values[int(0.9 * (len(values) - 1))]
    ax.set_ylim(lo - 0.05 * (hi - lo), hi + 0.15 * (hi - lo))


# ----------------------------------------------------------------------------
# A sweep.


def _sweep_points(workdir: str) -> list[str]:
  return sorted(name for name in os.listdir(workdir)
                if os.path.isfile(os.path.join(workdir, name,
                                               workdir_lib.CONFIG)))


def _write_sweep_report(workdir: str) -> None:
  from vae_jax import sweep_report  # pylint: disable=g-import-not-at-top
  points = _sweep_points(workdir)
  title = f"Sweep report: {os.path.basename(os.path.abspath(workdir))}"
  doc = _Doc(workdir)
  doc.heading(title, 1)
  done = [p for p in points
          if workdir_lib.is_done(os.path.join(workdir, p))]
  doc.para(f"{len(done)} of {len(points)} points finished.")
  for p in done:  # Each point's own report, linked from the table.
    if not os.path.isfile(os.path.join(workdir, p, HTML)):
      _write_run_report(os.path.join(workdir, p))
  if done:
    rows = sweep_report.summarize(workdir)
    columns = list(rows[0])
    doc.heading("Summary (summary.md, summary.csv, summary.json)")
    doc.table(columns, [[r[c] for c in columns] for r in rows],
              links={columns.index("point"): "{}/" + HTML})
    for plot in ("rate_distortion.png", "elbo_vs_latent.png"):
      if os.path.isfile(os.path.join(workdir, plot)):
        doc.image(plot, plot)
  unfinished = [p for p in points if p not in done]
  if unfinished:
    doc.para("Not finished: " + ", ".join(unfinished) + ".")
  doc.save(title)


# ----------------------------------------------------------------------------
# The command line.

def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  print(cli.run(write, flags.FLAGS.workdir))


if __name__ == "__main__":
  # Defined here only: the train loop imports this module, and main.py
  # defines its own --workdir.
  flags.DEFINE_string("workdir", None, "A run's or a sweep's directory.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main, flags_parser=cli.parse_flags)
