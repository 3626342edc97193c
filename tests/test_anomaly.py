"""Anomaly detection: the metrics' closed forms, one-class groups, errors.

One module-scoped pair of runs: two VAEs (trained on MNIST 0s and on 1s) in
one vmapped group, each on its own digit, and the 1s model again alone; an
autoencoder pair shows the evaluator on an AE.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import small_config
from vae_jax import train
from vae_jax import trained
from vae_jax import workdir as workdir_lib
from vae_jax.errors import UserError
from vae_jax.evaluators import anomaly


def _sklearn_auroc(labels, scores):
  # Imported here: scikit-learn takes ~3 s to import, which every test
  # worker would pay at collection.
  from sklearn import metrics  # pylint: disable=g-import-not-at-top
  return metrics.roc_auc_score(labels, scores)


# ----------------------------------------------------------------------------
# The metrics against closed forms.


def test_detection_metrics_closed_forms():
  perfect = anomaly.detection_metrics(np.array([1., 2, 3, 4]),
                                      np.array([0, 0, 1, 1], bool))
  assert perfect == {"auroc": 100.0, "auprc": 100.0, "fpr_at_95_tpr": 0.0}
  assert anomaly.detection_metrics(np.array([4., 3, 2, 1]), np.array(
      [0, 0, 1, 1], bool))["auroc"] == 0.0
  assert anomaly.detection_metrics(np.ones(6), np.array(
      [0, 1, 0, 1, 0, 1], bool))["auroc"] == 50.0  # Ties: half credit.
  # By hand: of the 4 (anomaly, normal) pairs, 0.35 < 0.4 is the one
  # misordered: AUROC 3/4. Ranked 0.8 (hit), 0.4, 0.35 (hit): AP =
  # 1/2 * 1 + 1/2 * 2/3. TPR 95% needs the threshold 0.35: FPR 1/2.
  m = anomaly.detection_metrics(np.array([0.1, 0.4, 0.35, 0.8]),
                                np.array([0, 0, 1, 1], bool))
  assert m["auroc"] == pytest.approx(75.0)
  assert m["auprc"] == pytest.approx(100 * (0.5 + 0.5 * 2 / 3))
  assert m["fpr_at_95_tpr"] == pytest.approx(50.0)


def test_input_complexity_is_the_bz2_code_length():
  import bz2  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  blank = np.zeros((1, 28, 28, 1), np.uint8)
  noise = np.where(rng.random((1, 28, 28, 1)) < 0.5, 255, 0).astype(np.uint8)
  c = anomaly.input_complexity(np.concatenate([blank, noise]))
  # 98 bytes of packed bits: bz2 cannot shrink coin flips, nor grow a blank
  # image past its header.
  packed = np.packbits(noise.reshape(-1) == 255).tobytes()
  assert c[1] == pytest.approx(8 * len(bz2.compress(packed, 9)) * np.log(2))
  assert c[1] > c[0] + 98 * 8 * np.log(2) * 0.8
  # Binary floats and {0, 255} pixels are the same input.
  np.testing.assert_array_equal(anomaly.input_complexity(noise / 255.0), c[1:])
  scores = anomaly.host_scores({"nll": np.array([10.0, 20.0])},
                               np.concatenate([blank, noise]))
  np.testing.assert_allclose(scores["nll_complexity"],
                             np.array([10.0, 20.0]) - c)


def test_auroc_is_the_mann_whitney_statistic():
  rng = np.random.default_rng(0)
  labels = rng.random(3000) < 0.3
  scores = np.round(rng.normal(labels * 0.7, 1.0), 1)  # Many ties.
  pos, neg = scores[labels], scores[~labels]
  wins = (pos[:, None] > neg[None]).mean() + 0.5 * (
      pos[:, None] == neg[None]).mean()
  got = anomaly.detection_metrics(scores, labels)
  assert got["auroc"] == pytest.approx(100 * wins, abs=1e-9)
  assert got["auroc"] == pytest.approx(
      100 * _sklearn_auroc(labels, scores))


# ----------------------------------------------------------------------------
# One-class models in one group.

_RUN = {"training.num_steps": 120, "training.batch_size": 64,
        "data.validation_fraction": 0.05,
        "data.eval_split": "test[:2000]",
        "evals.anomaly.enabled": True, "evals.anomaly.num_samples": 8,
        "evals.nll.enabled": False, "evals.elbo.every_steps": 0,
        "evals.images.every_steps": 0}
_AE = {"model.name": "mlp_ae", "objective.name": "ae",
       "data.binarization": "none"}
_NO_FIGURES = {"evals.images.enabled": False,
               "evals.latent_maps.enabled": False}


def _params(workdir):
  manager = workdir_lib.checkpoint_manager(workdir)
  return manager.restore(manager.latest_step(),
                         args=ocp.args.StandardRestore())["params"]


@pytest.fixture(scope="module")
def one_class(tmp_path_factory):
  root = tmp_path_factory.mktemp("one_class")
  dirs = {name: str(root / name)
          for name in ("vae0", "vae1", "alone1", "ae0", "ae1")}
  final = {}
  # The images and latent-map evaluators run in the group of VAEs (each
  # model on its own classes) and nowhere else here: nothing below looks at
  # their figures.
  for kind, extra in (("vae", {}), ("ae", {**_AE, **_NO_FIGURES})):
    configs = [small_config(**_RUN, **extra, **{"data.train_classes": d})
               for d in ("0", "1")]
    out = train.train_group(configs, [dirs[f"{kind}0"], dirs[f"{kind}1"]])
    final[f"{kind}0"], final[f"{kind}1"] = out
  final["alone1"] = train.train_and_evaluate(
      small_config(**_RUN, **_NO_FIGURES, **{"data.train_classes": "1"}),
      dirs["alone1"])
  return dirs, final


def test_a_one_class_model_in_a_group_ends_as_alone(one_class):
  dirs, final = one_class
  a, b = _params(dirs["vae1"]), _params(dirs["alone1"])
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.linalg.norm(x - y) <= 1e-5 * np.linalg.norm(y)
  for k, v in final["alone1"]["anomaly"].items():
    np.testing.assert_allclose(final["vae1"]["anomaly"][k], v, rtol=1e-4,
                               atol=1e-4, err_msg=k)
  # And the two models of the group did not see the same data.
  assert not np.allclose(jax.tree.leaves(_params(dirs["vae0"]))[0],
                         jax.tree.leaves(a)[0])


def test_a_model_of_0s_finds_1s_anomalous_and_the_api_agrees(one_class):
  dirs, final = one_class
  m = trained.load(dirs["vae0"])
  x, y = m.test_images(), m.test_labels()
  scores = m.anomaly_scores(x)
  assert set(scores) == set(anomaly.VAE_SCORES)
  for name in ("recon", "nelbo", "nll"):
    assert scores[name][y == 1].mean() > scores[name][y == 0].mean(), name
  # The evaluator's AUROC is the AUROC of the API's scores.
  results = workdir_lib.read_results(dirs["vae0"])["anomaly"]
  for name in anomaly.VAE_SCORES:
    np.testing.assert_allclose(
        results[f"{name}_auroc"],
        100 * _sklearn_auroc(y != 0, scores[name]), rtol=1e-5,
        err_msg=name)
  assert results["num_normal"] == int((y == 0).sum())
  assert results["num_anomalous"] == int((y != 0).sum())
  assert results["normal_classes"] == "0"
  assert results["nll_auroc"] > 90
  # The threshold holds its false-positive rate on normal test data
  # roughly (it was set on 5% of the training split).
  assert 0 < results["nll_test_fpr"] < 20
  for fig in ("anomaly_roc", "anomaly_scores"):
    assert os.path.isfile(os.path.join(dirs["vae0"], "images",
                                       f"{fig}_00000120.png"))


def test_the_evaluator_scores_autoencoders(one_class):
  _, final = one_class
  for digit in ("0", "1"):
    got = final[f"ae{digit}"]["anomaly"]
    assert set(k for k in got if k.endswith("_auroc")) == {
        "recon_auroc", "mse_auroc"}
    assert got["mse_auroc"] > 80
  with pytest.raises(UserError, match="Unknown anomaly score 'nll'"):
    trained.load(one_class[0]["ae0"]).anomaly_scores(np.zeros((1, 28, 28, 1)),
                                                      "nll")


# ----------------------------------------------------------------------------
# What cannot work says so before training.


@pytest.mark.parametrize("overrides, message", [
    ({"data.train_classes": "3", "data.test_classes": "3"},
     "every test example of mnist is normal (normal classes 3), so AUROC is "
     "undefined"),
    ({"data.train_classes": "", "evals.anomaly.normal_classes": "",
      "data.test_classes": "3"}, "evals.anomaly needs normal classes"),
    ({"data.train_classes": "3", "evals.anomaly.normal_classes": "x"},
     "normal class 'x' is not a class of mnist"),
])
def test_anomaly_errors_before_anything_is_written(tmp_path, overrides,
                                                   message):
  config = small_config(**{**_RUN, **overrides})
  with pytest.raises(UserError, match=message.replace("(", r"\(").replace(
      ")", r"\)")):
    train.train_and_evaluate(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_group_with_own_classes_needs_one_step_count(tmp_path):
  configs = [small_config(**{"data.train_classes": d,
                             "training.num_epochs": 0.2}) for d in "01"]
  with pytest.raises(UserError, match="need the same number of steps.*"
                     "set training.num_steps"):
    train.train_group(configs, [str(tmp_path / d) for d in "01"])
