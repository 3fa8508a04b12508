"""EvaluateModel: measure the trained model on the test set and write evaluation.json.

Loads model.tar.gz with the handlers it carries (code/inference.py), so the evaluation exercises
exactly what the endpoint will serve. evaluation.json is in SageMaker's model-quality statistics
format for multiclass classification (``multiclass_classification_metrics``: accuracy, weighted
precision / recall / F-scores, each with a standard deviation, and the confusion matrix keyed by
true then predicted label), so the model registry can chart it; the gate reads its accuracy with
JsonGet.
"""
import argparse
import importlib.util
import json
import os
import sys
import tarfile
import tempfile

import numpy as np

from job_contract import PROCESSING_FAILURE_FILE, fail



def load_handlers(model_dir):
    path = os.path.join(model_dir, "code", "inference.py")
    if not os.path.isfile(path):
        raise FileNotFoundError("model.tar.gz has no code/inference.py")
    spec = importlib.util.spec_from_file_location("model_inference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def extract_model(model_path, into):
    """Extract model.tar.gz (or use a folder as it is)."""
    if os.path.isdir(model_path):
        tars = [f for f in os.listdir(model_path) if f.endswith(".tar.gz")]
        if not tars:
            return model_path
        model_path = os.path.join(model_path, tars[0])
    with tarfile.open(model_path) as tar:
        for member in tar.getmembers():
            if member.name.startswith("/") or ".." in member.name.split("/"):
                raise ValueError(f"unsafe path in model archive: {member.name}")
        tar.extractall(into)
    return into


def load_test_set(folder):
    files = sorted(f for f in os.listdir(folder) if f.endswith(".npz"))
    if not files:
        raise FileNotFoundError(f"no .npz file in {folder}")
    with np.load(os.path.join(folder, files[0])) as data:
        return data["images"], data["labels"].astype(np.int64)


CLASSES = 10
# As Model Monitor documents it: the standard deviation of each metric over five random 80%
# samples, given only from 200 samples up ("NaN" below that).
SAMPLES, SAMPLE_FRACTION, MIN_FOR_DEVIATION = 5, 0.8, 200


def confusion_matrix(labels, predicted):
    confusion = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return confusion


def scores(labels, predicted):
    """Accuracy and the support-weighted precision, recall and F-scores of one sample."""
    confusion = confusion_matrix(labels, predicted)
    support = confusion.sum(axis=1)
    weights = support / max(support.sum(), 1)
    true_positive = confusion.diagonal()
    precision = true_positive / np.maximum(confusion.sum(axis=0), 1)
    recall = true_positive / np.maximum(support, 1)

    def f_beta(beta):
        denominator = beta ** 2 * precision + recall
        return np.where(denominator > 0, (1 + beta ** 2) * precision * recall
                        / np.maximum(denominator, 1e-12), 0.0)

    best_constant = support.max() / max(support.sum(), 1)  # always answering the commonest
    return {
        "accuracy": float((labels == predicted).mean()),
        "weighted_precision": float(weights @ precision),
        "weighted_recall": float(weights @ recall),
        "weighted_f0_5": float(weights @ f_beta(0.5)),
        "weighted_f1": float(weights @ f_beta(1.0)),
        "weighted_f2": float(weights @ f_beta(2.0)),
        "accuracy_best_constant_classifier": float(best_constant),
    }


def metrics(labels, predicted, seed=0):
    """The model-quality statistics document (see the module's docstring)."""
    values = scores(labels, predicted)
    deviations = {name: "NaN" for name in values}
    if len(labels) >= MIN_FOR_DEVIATION:
        rng = np.random.default_rng(seed)
        size = int(len(labels) * SAMPLE_FRACTION)
        samples = [scores(labels[i], predicted[i]) for i in
                   (rng.choice(len(labels), size, replace=False) for _ in range(SAMPLES))]
        deviations = {name: float(np.std([s[name] for s in samples])) for name in values}
    confusion = confusion_matrix(labels, predicted)
    report = {name: {"value": value, "standard_deviation": deviations[name]}
              for name, value in values.items()}
    report["confusion_matrix"] = {
        str(true): {str(guess): int(confusion[true, guess]) for guess in range(CLASSES)}
        for true in range(CLASSES)}
    return {"multiclass_classification_metrics": report}


def evaluate(model_path, test_dir, batch_size=1000):
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = extract_model(model_path, tmp)
        handlers = load_handlers(model_dir)
        model = handlers.model_fn(model_dir)
        images, labels = load_test_set(test_dir)
        predicted = []
        for start in range(0, len(images), batch_size):
            batch = handlers.to_images(images[start:start + batch_size])
            predicted.append(handlers.predict_fn(batch, model).argmax(axis=1))
    return metrics(labels, np.concatenate(predicted))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/opt/ml/processing/model",
                        help="model.tar.gz, or the folder holding it")
    parser.add_argument("--test", default="/opt/ml/processing/test")
    parser.add_argument("--output-dir", default="/opt/ml/processing/evaluation")
    parser.add_argument("--failure-file", default=PROCESSING_FAILURE_FILE)
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.model, args.test)
    except (OSError, ValueError, KeyError) as err:
        return fail(f"EvaluateModel failed: {err}", args.failure_file)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "evaluation.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    m = report["multiclass_classification_metrics"]
    confusion = m["confusion_matrix"]
    print(f"test_accuracy={m['accuracy']['value']:.4f} weighted_f1={m['weighted_f1']['value']:.4f}"
          f" on {sum(sum(row.values()) for row in confusion.values())} images", flush=True)
    print("per-class recall: " + " ".join(
        f"{d}:{confusion[d][d] / max(sum(confusion[d].values()), 1):.3f}" for d in confusion),
        flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
