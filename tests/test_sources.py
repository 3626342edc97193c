"""Every data source through one pipeline: readers, splits, classes, tables.

scikit-learn's digits (1,797 8x8 images, 10 classes) written as an `.npz`
and as a folder of PNGs in class subfolders, and breast_cancer (569 rows,
30 features, benign/malignant) written as a CSV with a label column, all
offline; MNIST from tensorflow-datasets for class selection at scale.
"""

import errno
import os
import threading

import jax
import numpy as np
from PIL import Image
import pytest

from conftest import DEFAULT_CONFIG, cli_args, run_module, small_config
from vae_jax import batching
from vae_jax import config_lib
from vae_jax import input_pipeline
from vae_jax import sources
from vae_jax import tfds_source
from vae_jax import splits
from vae_jax import train
from vae_jax import trained
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """digits.npz, digits/ (PNGs in class subfolders), breast_cancer.csv."""
  root = tmp_path_factory.mktemp("data")
  digits = sources.sklearn_dataset("digits")
  np.savez(root / "digits.npz", x=digits.x[..., 0], y=digits.y)
  for i, (x, y) in enumerate(zip(digits.x, digits.y)):
    folder = root / "digits" / digits.class_names[y]
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(x[..., 0]).save(folder / f"{i:04d}.png")
  cancer = sources.sklearn_dataset("breast_cancer")
  with open(root / "breast_cancer.csv", "w") as f:
    f.write(",".join([f"f{j}" for j in range(30)] + ["diagnosis"]) + "\n")
    for x, y in zip(cancer.x, cancer.y):
      f.write(",".join([repr(float(v)) for v in x]
                       + [cancer.class_names[y]]) + "\n")
  return root


def _data(**fields):
  config = config_lib.base().data
  config.update(fields)
  input_pipeline.validate_config(config)
  return config


# ----------------------------------------------------------------------------
# Readers.


def test_sklearn_digits_are_uint8_images_with_names():
  ex = sources.sklearn_dataset("digits")
  assert ex.x.shape == (1797, 8, 8, 1) and ex.x.dtype == np.uint8
  assert ex.x.max() == 255 and ex.x.min() == 0  # 16 -> 255, 0 -> 0
  assert ex.class_names == tuple("0123456789")
  np.testing.assert_array_equal(np.bincount(ex.y)[:3], [178, 182, 177])


def test_npz_folder_and_csv_readers(files, tmp_path):
  npz = sources.read_npz(str(files / "digits.npz"))
  folder = sources.read_images(str(files / "digits"))
  digits = sources.sklearn_dataset("digits")
  # The folder lists class 0's files first: the npz in that order.
  order = np.argsort(digits.y, kind="stable")
  np.testing.assert_array_equal(folder.x, digits.x[order])
  np.testing.assert_array_equal(folder.y, digits.y[order])
  np.testing.assert_array_equal(npz.x, digits.x)
  assert folder.class_names == npz.class_names == tuple("0123456789")
  table = sources.read_csv(str(files / "breast_cancer.csv"), "diagnosis")
  cancer = sources.sklearn_dataset("breast_cancer")
  np.testing.assert_allclose(table.x, cancer.x)
  # Labels from strings: sorted names, so 'benign' is 0 here.
  assert table.class_names == ("benign", "malignant")
  np.testing.assert_array_equal(table.y, 1 - cancer.y)
  np.save(tmp_path / "x.npy", np.zeros((5, 3), np.float32))
  unlabeled = sources.read_npz(str(tmp_path / "x.npy"))
  assert unlabeled.y is None and unlabeled.x.shape == (5, 3)
  flat = tmp_path / "flat"
  flat.mkdir()
  for i in range(3):
    Image.fromarray(np.full((4, 5), 40 * i, np.uint8)).save(flat / f"{i}.png")
  gray = sources.read_images(str(flat))
  assert gray.y is None and gray.x.shape == (3, 4, 5, 1)
  np.testing.assert_array_equal(gray.x[:, 0, 0, 0], [0, 40, 80])
  Image.fromarray(np.full((4, 5, 3), [1, 2, 3], np.uint8)).save(
      flat / "3.png")
  rgb = sources.read_images(str(flat))  # One color image: all RGB.
  assert rgb.x.shape == (4, 4, 5, 3)
  np.testing.assert_array_equal(rgb.x[:, 0, 0], [[0] * 3, [40] * 3, [80] * 3,
                                                 [1, 2, 3]])


def test_a_folder_and_an_npz_of_the_same_images_give_the_same_batches(
    files, tmp_path):
  digits = sources.sklearn_dataset("digits")
  order = np.argsort(digits.y, kind="stable")  # The folder's order.
  np.savez(tmp_path / "sorted.npz", x=digits.x[order], y=digits.y[order])
  a = input_pipeline.load(_data(source="npz", path=str(tmp_path / "sorted.npz"),
                                num_shards=2))
  b = input_pipeline.load(_data(source="images", path=str(files / "digits"),
                                num_shards=2))
  for name in ("test_x", "test_labels", "class_names", "num_train_examples",
               "kind", "value_range", "is_binary"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  chunk = lambda d: batching.TrainBatches(
      d.train_shards, d.shard_indices, 16, 40, seed=3).chunk(37, 5, 5)
  np.testing.assert_array_equal(chunk(a), chunk(b))
  assert chunk(a).shape == (5, 32, 8, 8, 1)


def test_processes_shards_make_up_the_single_process_shards():
  config = _data(source="sklearn", name="digits", num_shards=4)
  whole = input_pipeline.load(config)
  parts = [input_pipeline.load(config, process_index=p, process_count=2)
           for p in range(2)]
  assert [p.shard_indices for p in parts] == [[0, 1], [2, 3]]
  for i in range(4):
    np.testing.assert_array_equal(parts[i // 2].train_shards[i % 2],
                                  whole.train_shards[i])
    np.testing.assert_array_equal(parts[i // 2].train_labels[i % 2],
                                  whole.train_labels[i])
  assert {len(x) for x in whole.train_shards} <= {359, 360}  # 1438 / 4


def test_float_images_in_0_1_binarize_with_p_equal_to_x(tmp_path):
  np.savez(tmp_path / "f.npz", x=np.full((400, 4, 4), 0.25, np.float32))
  data = input_pipeline.load(_data(source="npz", path=str(tmp_path / "f.npz")))
  assert data.kind == "image" and data.test_x.dtype == np.float32
  assert set(np.unique(data.test_x).tolist()) == {0.0, 1.0}  # Fixed sample.
  x = np.asarray(input_pipeline.preprocess(
      data.train_shards[0], jax.random.key(0), "dynamic"))
  assert set(np.unique(x).tolist()) == {0.0, 1.0}
  assert abs(x.mean() - 0.25) < 5 * np.sqrt(0.25 * 0.75 / x.size)


# ----------------------------------------------------------------------------
# Splits and classes.


def test_held_out_split_is_seeded_disjoint_and_stated(tmp_path):
  n = 1000
  np.savez(tmp_path / "ids.npz", x=np.arange(n, dtype=np.float32)[:, None])
  load = lambda **kw: input_pipeline.load(_data(
      source="npz", path=str(tmp_path / "ids.npz"), **kw))
  a, b, c = load(), load(), load(split_seed=1)
  ids = lambda d: set(d.standardization.invert(np.concatenate(
      [d.test_x, *d.train_shards])).round().astype(int)[:, 0].tolist())
  assert len(a.test_x) == 200 and a.num_train_examples == 800
  assert ids(a) == set(range(n))  # Disjoint, and nothing lost.
  np.testing.assert_array_equal(a.test_x, b.test_x)
  assert not np.array_equal(a.test_x, c.test_x)
  assert a.test_split == "held-out 20% of the examples (data.split_seed=0)"
  assert len(load(test_fraction=0.05).test_x) == 50


def test_train_classes_yield_only_those_labels(tmp_path):
  data = input_pipeline.load(_data(source="sklearn", name="digits",
                                   train_classes="3, 5"))
  labels = np.concatenate(data.train_labels)
  assert set(labels.tolist()) == {3, 5}
  whole = input_pipeline.load(_data(source="sklearn", name="digits"))
  whole_train = np.concatenate(whole.train_labels)
  assert len(labels) == np.isin(whole_train, [3, 5]).sum()
  # The test split is the same held-out split, all classes.
  np.testing.assert_array_equal(data.test_x, whole.test_x)
  tested = input_pipeline.load(_data(source="sklearn", name="digits",
                                     test_classes="0"))
  assert set(tested.test_labels.tolist()) == {0}


def test_one_class_mnist_trains_on_one_digit():
  data = input_pipeline.load(_data(train_classes="1"))
  assert data.num_train_examples == 6742  # MNIST's training 1s.
  assert set(np.concatenate(data.train_labels).tolist()) == {1}
  assert len(data.test_x) == 10_000 and data.class_names[1] == "1"


def test_tables_are_standardized_with_training_statistics(files):
  data = input_pipeline.load(_data(
      source="csv", path=str(files / "breast_cancer.csv"),
      label_column="diagnosis"))
  assert data.kind == "table" and data.binarization == "none"
  train_x = np.concatenate(data.train_shards)
  np.testing.assert_allclose(train_x.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(train_x.std(0), 1, atol=1e-4)
  raw = sources.read_csv(str(files / "breast_cancer.csv"), "diagnosis")
  _, test = splits.hold_out(raw, 0.2, 0)
  train, _ = splits.hold_out(raw, 0.2, 0)
  expected = (test.x - train.x.mean(0)) / train.x.std(0)
  np.testing.assert_allclose(data.test_x, expected, rtol=1e-4, atol=1e-4)
  # Statistics of the training classes only, when classes are selected.
  benign = input_pipeline.load(_data(
      source="csv", path=str(files / "breast_cancer.csv"),
      label_column="diagnosis", train_classes="benign"))
  np.testing.assert_allclose(
      benign.standardization.mean,
      train.x[train.y == 0].mean(0), rtol=1e-4)


# ----------------------------------------------------------------------------
# A short run from each source.

_SHORT = {"training.num_epochs": 2.0, "training.batch_size": 64,
          "training.checkpoint_every_steps": 10, "evals.nll.num_samples": 10}


@pytest.mark.parametrize("source", ["npz", "images", "csv", "sklearn_digits",
                                    "sklearn_breast_cancer"])
def test_short_run_from_each_source(files, tmp_path, source):
  data = {
      "npz": {"data.source": "npz", "data.path": str(files / "digits.npz")},
      "images": {"data.source": "images", "data.path": str(files / "digits")},
      "csv": {"data.source": "csv",
              "data.path": str(files / "breast_cancer.csv"),
              "data.label_column": "diagnosis"},
      "sklearn_digits": {"data.source": "sklearn", "data.name": "digits"},
      "sklearn_breast_cancer": {"data.source": "sklearn",
                                "data.name": "breast_cancer"},
  }[source]
  workdir = str(tmp_path / "w")
  final = train.train_and_evaluate(small_config(**_SHORT, **data), workdir)
  results = workdir_lib.read_results(workdir)
  is_table = source in ("csv", "sklearn_breast_cancer")
  assert np.isfinite(final["elbo"]["nelbo"]) and np.isfinite(
      final["nll"]["nll"])
  assert results["elbo"]["split"].startswith("held-out 20%")
  assert ("images" in final) != is_table  # No pictures of table rows.
  m = trained.load(workdir)
  raw = m.test_images(8)
  if is_table:
    assert os.path.isfile(os.path.join(workdir, "standardization.json"))
    s = m.data.standardization
    direct = m.model.apply(m.params, (raw - s.mean) / s.std, method="encode")
    np.testing.assert_allclose(m.encode(raw).mean, direct.mean, rtol=1e-4,
                               atol=1e-5)
    assert m.model.decoder.likelihood == "gaussian"  # "auto" on a table.
  if source == "csv":  # A path works wherever an array does.
    np.testing.assert_allclose(
        m.encode(str(files / "breast_cancer.csv")).mean[:3],
        m.model.apply(m.params, m.data.standardization.apply(
            sources.read_csv(str(files / "breast_cancer.csv"),
                             "diagnosis").x[:3]),
                      method="encode").mean, rtol=1e-4, atol=1e-5)
  assert m.test_labels(8).shape == (8,) and len(m.class_names) >= 2


# ----------------------------------------------------------------------------
# Bad data: one sentence, exit status 2, nothing written.


def _bad_files(root):
  np.savez(root / "nan.npz", x=np.where(
      np.arange(600).reshape(100, 6) == 250, np.nan, 0.5).astype(np.float32))
  np.savez(root / "labels.npz", x=np.zeros((10, 4, 4), np.uint8),
           y=np.zeros(9, np.int64))
  np.savez(root / "gray.npz", x=np.full((100, 4, 4), 0.5, np.float32))
  np.savez(root / "wide.npz", x=np.full((100, 4, 4), 3.0, np.float32))
  np.savez(root / "empty.npz", x=np.zeros((0, 4), np.float32))
  (root / "ragged").mkdir()
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "ragged" / "a.png")
  Image.fromarray(np.zeros((9, 8), np.uint8)).save(root / "ragged" / "b.png")
  (root / "no_images").mkdir()
  (root / "text.csv").write_text("a,b,c,d\n1,x,3,q\n4,y,6,r\n")
  (root / "missing_cell.csv").write_text("a,b\n1,2\n3,\n5,6\n")


_BAD = [
    ({"data.source": "npz", "data.path": "{root}/nope.npz"},
     "{root}/nope.npz does not exist"),
    ({"data.source": "images", "data.path": "{root}/nope"},
     "{root}/nope does not exist"),
    ({"data.source": "npz", "data.path": "{root}/empty.npz"},
     "{root}/empty.npz holds no examples"),
    ({"data.source": "images", "data.path": "{root}/no_images"},
     "{root}/no_images holds no examples"),
    ({"data.source": "npz", "data.path": "{root}/nan.npz"},
     "holds 1 NaN or inf value(s); the first is in example 41"),
    ({"data.source": "csv", "data.path": "{root}/missing_cell.csv"},
     "holds 1 NaN or inf value(s); the first is in example 1 (line 3"),
    ({"data.source": "images", "data.path": "{root}/ragged"},
     "differ in size ({root}/ragged/a.png is 8x8; {root}/ragged/b.png is "
     "8x9)"),
    ({"data.source": "npz", "data.path": "{root}/labels.npz"},
     "holds 9 labels for 10 examples"),
    ({"data.source": "npz", "data.path": "{root}/wide.npz",
      "data.binarization": "none", "model.likelihood": "bernoulli"},
     "model.likelihood='bernoulli' needs data in [0, 1], but "
     "{root}/wide.npz spans [3, 3]"),
    ({"data.source": "npz", "data.path": "{root}/gray.npz",
      "data.binarization": "none"},
     "A VAE's Bernoulli likelihood needs binary data, but {root}/gray.npz "
     "has values strictly between 0 and 1 and data.binarization='none'"),
    ({"data.source": "npz", "data.path": "{root}/wide.npz",
      "model.likelihood": "gaussian"},
     "data.binarization='dynamic' draws pixels with p = x, but"),
    ({"data.source": "sklearn", "data.name": "digits",
      "data.train_classes": "3,11"},
     "data.train_classes names class '11', which does not occur in "
     "scikit-learn digits; its classes are 0, 1, 2"),
    ({"data.source": "npz", "data.path": "{root}/gray.npz",
      "data.train_classes": "1"},
     "data.train_classes='1' needs labels, but {root}/gray.npz has none"),
    ({"data.source": "sklearn", "data.name": "digits",
      "data.test_fraction": 1.5}, "data.test_fraction must be in (0, 1)"),
    ({"data.source": "sklearn", "data.name": "digits",
      "data.test_fraction": 0.0001}, "leaves no test example"),
    ({"data.source": "csv", "data.path": "{root}/text.csv"},
     "has non-numeric columns b, d"),
    ({"data.source": "csv", "data.path": "{root}/text.csv",
      "data.label_column": "e"}, "has no column 'e' (data.label_column)"),
]


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  _bad_files(root)
  return root


@pytest.mark.parametrize("overrides, message", _BAD,
                         ids=[str(i) for i in range(len(_BAD))])
def test_bad_data_is_one_sentence_exit_2_nothing_written(bad_root, tmp_path,
                                                         overrides, message):
  overrides = {k: v.format(root=bad_root) if isinstance(v, str) else v
               for k, v in overrides.items()}
  workdir = tmp_path / "w"
  out = run_module("vae_jax.main", [f"--config={DEFAULT_CONFIG}:runlocal",
                                    f"--workdir={workdir}",
                                    *cli_args(overrides)])
  assert out.returncode == 2, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  lines = [l for l in out.stderr.splitlines() if l.startswith("vae_jax:")]
  assert len(lines) == 1, out.stderr[-2000:]
  assert message.format(root=bad_root) in lines[0]
  assert not workdir.exists()  # Nothing written.


def test_tfds_splits_are_decoded_once_then_read_from_the_cache(
    tmp_path, monkeypatch):
  monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "cache"))
  builder = tfds_source.tfds_builder(small_config().data)
  first = tfds_source.read_tfds(builder, "test[:2%]")
  assert first.x.shape == (200, 28, 28, 1) and first.x.dtype == np.uint8
  # MNIST's test split is one file: decoded whole, once for its slices.
  assert len(list((tmp_path / "cache" / "tfds").glob("*.npz"))) == 1

  def no_decoding(*args):
    raise AssertionError(f"decoded again: {args}")

  monkeypatch.setattr(tfds_source, "_decode_tfds", no_decoding)
  again = tfds_source.read_tfds(builder, "test[:2%]")
  np.testing.assert_array_equal(again.x, first.x)
  np.testing.assert_array_equal(again.y, first.y)
  assert again.class_names == first.class_names == tuple("0123456789")
  assert again.where == first.where == "mnist test[:2%]"
  other = tfds_source.read_tfds(builder, "test[100:300]")  # Cut from the cache.
  np.testing.assert_array_equal(other.x[:100], first.x[100:])
  assert other.where == "mnist test[100:300]"
  with pytest.raises(AssertionError, match="decoded again"):
    tfds_source.read_tfds(builder, "train[:1%]")  # Another split: not cached.
  with pytest.raises(AssertionError, match="decoded again"):
    # Two splits: tf.data interleaves them, decoded as tfds reads them.
    tfds_source.read_tfds(builder, "test[:1%]+test[-1%:]")


def test_a_split_another_process_is_decoding_is_waited_for(tmp_path,
                                                          monkeypatch):
  monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "cache"))
  builder = tfds_source.tfds_builder(small_config().data)
  path = tfds_source._tfds_cache_path(builder, "test")
  decode, decoded, read = tfds_source._decode_tfds, [], {}
  monkeypatch.setattr(tfds_source, "_decode_tfds",
                      lambda *args: decoded.append(args) or decode(*args))
  reader = threading.Thread(target=lambda: read.update(
      examples=tfds_source.read_tfds(builder, "test[:1%]")))
  # The "other process": holds the lock (flock: per open file, so a thread
  # of this process waits as another process would) while it decodes.
  with tfds_source._cache_lock(path):
    reader.start()
    reader.join(timeout=1.0)
    assert reader.is_alive() and not read  # Waiting, not decoding.
    whole = decode(builder, "test")
    tfds_source._write_cache(path, whole)
  reader.join(timeout=60)
  assert not decoded  # It read the other's file.
  np.testing.assert_array_equal(read["examples"].x, whole.x[:100])


def test_a_filesystem_without_flock_decodes_without_turns(tmp_path,
                                                         monkeypatch):
  monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "cache"))
  builder = tfds_source.tfds_builder(small_config().data)

  def no_flock(*args):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(tfds_source.fcntl, "flock", no_flock)
  examples = tfds_source.read_tfds(builder, "test[:1%]")
  assert examples.x.shape == (100, 28, 28, 1)
  assert len(list((tmp_path / "cache" / "tfds").glob("*.npz"))) == 1


@pytest.mark.parametrize("split", ["test[:2%]", "test[-150:]", "test[10:20]",
                                   "test[33%:34%]", "test[:1%]+test[-1%:]"])
def test_tfds_splits_hold_what_tfds_gives(tmp_path, monkeypatch, split):
  # Cut from the cached whole split, or decoded: the examples, labels and
  # order of tfds's own reading of `split`.
  monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "cache"))
  builder = tfds_source.tfds_builder(small_config().data)
  ours = tfds_source.read_tfds(builder, split)
  theirs = tfds_source._decode_tfds(builder, split)
  assert len(ours.x) == len(theirs.x) > 0
  np.testing.assert_array_equal(ours.x, theirs.x)
  np.testing.assert_array_equal(ours.y, theirs.y)


@pytest.mark.parametrize("split, message", [
    ("test[:10%", "is not a tfds split such as 'train', 'test[:1000]' or "
     "'train[:10%]' (Unrecognized split format"),
    ("test[:101%]", "is not a tfds split such as 'train', 'test[:1000]' or "
     "'train[:10%]' (When unit=%, percent slice boundaries should be in "
     "[-100, 100]"),
    ("all[:10%]", "is not a tfds split such as"),
    ("test[5:5]", "holds no example (test has 10000)."),
    ("test[9990:10]", "holds no example (test has 10000)."),
    ("train[:1%]+test[3:3]", "holds no example (test has 10000).")])
def test_a_malformed_or_empty_split_is_one_sentence(split, message):
  builder = tfds_source.tfds_builder(small_config().data)
  for check in (lambda: tfds_source.read_tfds(builder, split),
                lambda: tfds_source.tfds_builder(
                    small_config(**{"data.eval_split": split}).data)):
    with pytest.raises(UserError) as e:
      check()
    text = str(e.value)
    if split.startswith("all"):  # Not a split MNIST has.
      assert "has no split 'all'" in text or message in text, text
    else:
      assert text.startswith(f"Split {split!r} of dataset 'mnist' "), text
      assert message in text, text
    assert "\n" not in text


def test_a_split_of_two_parts_passes_the_split_check():
  config = small_config(**{"data.eval_split": "test[:1%]+train[:1%]"}).data
  assert tfds_source.tfds_builder(config).info.name == "mnist"


def test_tfds_cache_is_keyed_on_the_prepared_files(tmp_path, monkeypatch):
  monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "cache"))
  prepared = tmp_path / "fake" / "1.0.0"
  prepared.mkdir(parents=True)
  (prepared / "fake-train.tfrecord-00000-of-00001").write_bytes(b"1234")
  builder = type("Builder", (), {"data_dir": str(prepared),
                                 "info": type("Info", (), {"name": "fake"})})
  path = tfds_source._tfds_cache_path(builder, "train")
  assert path.startswith(str(tmp_path / "cache" / "tfds" / "fake-"))
  assert tfds_source._tfds_cache_path(builder, "train") == path
  assert tfds_source._tfds_cache_path(builder, "test") != path
  os.utime(prepared / "fake-train.tfrecord-00000-of-00001", (1, 1))
  assert tfds_source._tfds_cache_path(builder, "train") != path  # Re-prepared.


def test_an_unwritable_cache_is_skipped(tmp_path, monkeypatch):
  (tmp_path / "a_file").write_text("")
  monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "a_file"))
  builder = tfds_source.tfds_builder(small_config().data)
  examples = tfds_source.read_tfds(builder, "test[:1%]")
  assert examples.x.shape == (100, 28, 28, 1)


def test_a_cut_short_cache_file_is_decoded_again(tmp_path, monkeypatch):
  monkeypatch.setenv(tfds_source.CACHE_ENV, str(tmp_path / "cache"))
  builder = tfds_source.tfds_builder(small_config().data)
  first = tfds_source.read_tfds(builder, "test[:1%]")
  (path,) = (tmp_path / "cache" / "tfds").glob("*.npz")
  path.write_bytes(path.read_bytes()[:1000])  # E.g. a full disk.
  again = tfds_source.read_tfds(builder, "test[:1%]")
  np.testing.assert_array_equal(again.x, first.x)
  assert len(again.x) == 100
  assert len(np.load(path)["x"]) == 10000  # The test split, rewritten whole.
