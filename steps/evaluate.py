"""EvaluateModel: measure the trained model on the test set and write evaluation.json.

Loads model.tar.gz with the handlers it carries (code/inference.py), so the evaluation exercises
exactly what the endpoint will serve. evaluation.json follows SageMaker's model-quality shape
(``{"metrics": {"accuracy": {"value": ...}}}``); the pipeline reads it with JsonGet and attaches
it to the registered model package.
"""
import argparse
import importlib.util
import json
import os
import sys
import tarfile
import tempfile

import numpy as np

# The container contract: a processing job explains its failure in /opt/ml/output/message.
FAILURE_FILE = os.path.join(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"), "message")


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


def metrics(labels, predicted):
    confusion = np.zeros((10, 10), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    accuracy = float((labels == predicted).mean())
    return {
        "metrics": {
            "accuracy": {"value": accuracy,
                         "standard_deviation": float(np.sqrt(accuracy * (1 - accuracy) / len(labels)))},
            "per_class_accuracy": {str(d): {"value": float(per_class[d])} for d in range(10)},
            "confusion_matrix": {"rows_true_columns_predicted": confusion.tolist()},
            "test_images": {"value": int(len(labels))},
        }
    }


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
    parser.add_argument("--failure-file", default=FAILURE_FILE)
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.model, args.test)
    except (OSError, ValueError, KeyError) as err:
        message = f"EvaluateModel failed: {err}"
        print(message, file=sys.stderr, flush=True)
        os.makedirs(os.path.dirname(args.failure_file), exist_ok=True)
        with open(args.failure_file, "w") as handle:
            handle.write(message)
        return 1
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "evaluation.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    m = report["metrics"]
    print(f"test_accuracy={m['accuracy']['value']:.4f} on {m['test_images']['value']} images",
          flush=True)
    print("per-class accuracy: " + " ".join(
        f"{d}:{m['per_class_accuracy'][str(d)]['value']:.3f}" for d in range(10)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
