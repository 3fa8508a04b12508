"""A short real training, its exported model, and the evaluation that gates deployment."""
import json
import re

import numpy as np
import pytest

import evaluate

from conftest import run_script

# The same regexes the pipeline's metric_definitions use (pipeline/definition.py).
METRIC = r"{}=([0-9.]+(?:e[-+]?[0-9]+)?)"
NAMES = ("train_loss", "train_accuracy", "validation_loss", "validation_accuracy")


def test_training_logs_metrics_each_epoch_and_exports_a_servable_model(trained):
    model_dir, log = trained
    epoch_lines = [line for line in log.splitlines() if line.startswith("epoch=")]
    assert len(epoch_lines) == 2
    for line in epoch_lines:
        values = {n: float(re.search(METRIC.format(n), line).group(1)) for n in NAMES}
        assert 0 < values["train_loss"] < 1 and 0.8 < values["validation_accuracy"] <= 1
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "code", "model-0000.params", "model-symbol.json", "training-history.json"]
    assert (model_dir / "code" / "inference.py").is_file()


def test_two_epochs_reach_95_percent_test_accuracy(model_tar, prepared, tmp_path):
    run_script("steps/evaluate.py", "--model", model_tar, "--test", prepared / "test",
               "--output-dir", tmp_path)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert list(report) == ["multiclass_classification_metrics"]  # the model-quality format
    metrics = report["multiclass_classification_metrics"]
    assert metrics["accuracy"]["value"] >= 0.95
    for name in ("accuracy", "weighted_precision", "weighted_recall", "weighted_f1"):
        assert 0.9 < metrics[name]["value"] <= 1
        assert 0 < metrics[name]["standard_deviation"] < 0.01
    confusion = metrics["confusion_matrix"]
    assert sorted(confusion) == [str(d) for d in range(10)]
    assert sum(sum(row.values()) for row in confusion.values()) == 10000
    assert sum(confusion[str(d)][str(d)] for d in range(10)) / 10000 == pytest.approx(
        metrics["accuracy"]["value"])
    assert all(confusion[str(d)][str(d)] / sum(confusion[str(d)].values()) > 0.85
               for d in range(10))


def test_weighted_scores_match_a_hand_computed_case():
    labels = np.array([0, 0, 0, 1])
    predicted = np.array([0, 0, 1, 1])
    report = evaluate.metrics(labels, predicted)["multiclass_classification_metrics"]
    # class 0: precision 1, recall 2/3, weight 3/4; class 1: precision 1/2, recall 1, weight 1/4
    assert report["accuracy"]["value"] == pytest.approx(0.75)
    assert report["weighted_precision"]["value"] == pytest.approx(0.75 * 1 + 0.25 * 0.5)
    assert report["weighted_recall"]["value"] == pytest.approx(0.75)
    assert report["weighted_f1"]["value"] == pytest.approx(0.75 * 0.8 + 0.25 * (2 / 3))
    assert report["accuracy"]["standard_deviation"] == "NaN"  # under 200 samples, as documented
    assert report["confusion_matrix"]["0"] == {"0": 2, "1": 1, **{str(d): 0 for d in range(2, 10)}}


def test_diverging_training_fails_clearly(prepared, tmp_path):
    failure = tmp_path / "failure"
    proc = run_script("src/train/train.py", "--epochs", 1, "--learning-rate", "1e30",
                      "--optimizer", "sgd", "--train", prepared / "validation",
                      "--validation", prepared / "validation", "--model-dir", tmp_path / "m",
                      "--failure-file", failure, check=False)
    assert proc.returncode == 1
    assert "diverged" in failure.read_text() and "epoch 1" in failure.read_text()
    assert not (tmp_path / "m").exists()


def test_missing_channel_fails_clearly(tmp_path):
    failure = tmp_path / "failure"
    proc = run_script("src/train/train.py", "--epochs", 1, "--train", tmp_path / "nothing",
                      "--validation", tmp_path / "nothing", "--model-dir", tmp_path / "m",
                      "--failure-file", failure, check=False)
    assert proc.returncode == 1
    assert "no .npz file in channel folder" in failure.read_text()


def test_evaluate_rejects_a_model_without_handlers(prepared, tmp_path):
    (tmp_path / "model").mkdir()
    failure = tmp_path / "failure"
    proc = run_script("steps/evaluate.py", "--model", tmp_path / "model", "--test",
                      prepared / "test", "--output-dir", tmp_path / "out",
                      "--failure-file", failure, check=False)
    assert proc.returncode == 1 and "code/inference.py" in failure.read_text()


# Multiclass model-quality metrics as SageMaker documents them (Model Monitor's model quality
# metrics for multiclass classification): the names EvaluateModel may write.
DOCUMENTED = {"confusion_matrix", "accuracy", "weighted_recall", "weighted_precision",
              "weighted_f0_5", "weighted_f1", "weighted_f2", "accuracy_best_constant_classifier",
              "weighted_recall_best_constant_classifier",
              "weighted_precision_best_constant_classifier",
              "weighted_f0_5_best_constant_classifier", "weighted_f1_best_constant_classifier",
              "weighted_f2_best_constant_classifier"}


def test_evaluation_member_names_are_awss_documented_ones():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    report = evaluate.metrics(labels, predicted)
    assert list(report) == ["multiclass_classification_metrics"]
    names = set(report["multiclass_classification_metrics"])
    assert names <= DOCUMENTED, names - DOCUMENTED
    assert {"confusion_matrix", "accuracy", "weighted_precision", "weighted_recall",
            "weighted_f1"} <= names
