"""TrainModel: SageMaker script-mode entry point training a Gluon MLP on MNIST.

Follows SageMaker's training contract: hyperparameters arrive as command-line flags, paths and
cluster layout as SM_* variables; the model goes to SM_MODEL_DIR as ``model-symbol.json`` +
``model-0000.params`` with ``code/inference.py`` beside it, so model.tar.gz serves as it is.
On several hosts every worker trains on its own shard and gradients are aggregated through
MXNet's ``dist_sync`` kvstore. Per-epoch lines match the pipeline's metric_definitions.
"""
import argparse
import json
import logging
import math
import os
import shutil
import sys
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, nd

HERE = os.path.dirname(os.path.abspath(__file__))
# The packaged source dir carries job_contract.py (and inference.py) beside this file; a
# checkout keeps it in steps/ (and src/inference).
if not os.path.isfile(os.path.join(HERE, "job_contract.py")):
    sys.path.append(os.path.join(HERE, os.pardir, os.pardir, "steps"))
from job_contract import TRAINING_FAILURE_FILE, fail  # noqa: E402

INFERENCE_CANDIDATES = [os.path.join(HERE, "inference.py"),
                        os.path.join(HERE, os.pardir, "inference", "inference.py")]


class TrainingError(Exception):
    """Training cannot go on (diverged, or bad input)."""


def parse_args(argv=None):
    env = os.environ
    parser = argparse.ArgumentParser(description="Train an MLP on MNIST (SageMaker script mode).")
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--learning-rate", type=float, default=0.007)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-units", default="128,64",
                        help="comma-separated sizes of the hidden layers")
    parser.add_argument("--weight-decay", type=float, default=0.0005)
    parser.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--lr-schedule", default="cosine", choices=["cosine", "constant"])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model-dir", default=env.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    parser.add_argument("--validation",
                        default=env.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation"))
    parser.add_argument("--hosts", default=env.get("SM_HOSTS", '["algo-1"]'))
    parser.add_argument("--current-host", default=env.get("SM_CURRENT_HOST", "algo-1"))
    parser.add_argument("--failure-file", default=TRAINING_FAILURE_FILE)
    args = parser.parse_args(argv)
    args.hosts = json.loads(args.hosts) if args.hosts.startswith("[") else args.hosts.split(",")
    try:
        args.hidden_units = [int(v) for v in args.hidden_units.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--hidden-units must be integers, got {args.hidden_units!r}")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.learning_rate > 0:
        parser.error("--learning-rate must be positive")
    return args


def load_channel(folder):
    """Load the one .npz file of a channel: uint8 images (N, 28, 28) and labels (N,)."""
    listed = os.listdir(folder) if os.path.isdir(folder) else []
    files = sorted(f for f in listed if f.endswith(".npz"))
    if not files:
        raise TrainingError(f"no .npz file in channel folder {folder}")
    with np.load(os.path.join(folder, files[0])) as data:
        images, labels = data["images"], data["labels"]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise TrainingError(f"{files[0]} in {folder} does not hold 28x28 images with labels")
    return images.reshape(len(images), 784), labels.astype(np.float32)


def build_net(hidden_units):
    net = gluon.nn.HybridSequential()
    for units in hidden_units:
        net.add(gluon.nn.Dense(units, activation="relu"))
    net.add(gluon.nn.Dense(10))
    return net


def to_ndarrays(images, labels):
    """Convert once: float32 pixels in [0, 1] and float32 labels, kept in NDArrays."""
    return nd.array(images, dtype=np.uint8).astype(np.float32) / 255.0, nd.array(labels)


def batches(x, y, batch_size, order=None, drop_last=False):
    """Slice (optionally shuffled) NDArrays into batches: no per-sample Python work.
    ``drop_last`` keeps every batch full (a distributed kvstore needs one batch size)."""
    if order is not None:
        index = nd.array(order, dtype=np.int32)
        x, y = nd.take(x, index), nd.take(y, index)
    end = x.shape[0] - (x.shape[0] % batch_size if drop_last else 0)
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, end, batch_size)]


def evaluate(net, loss_fn, batches):
    """Mean loss and accuracy over pre-batched data."""
    total_loss, correct, count = 0.0, 0.0, 0
    for x, y in batches:
        out = net(x)
        total_loss += loss_fn(out, y).sum().asscalar()
        correct += (out.argmax(axis=1) == y).sum().asscalar()
        count += x.shape[0]
    return total_loss / count, correct / count


def create_kvstore(hosts):
    """``dist_sync`` across hosts (the parameter servers are started by the container)."""
    return mx.kv.create("dist_sync" if len(hosts) > 1 else "device")


def make_net(hidden_units):
    net = build_net(hidden_units)
    net.initialize(mx.init.Xavier(magnitude=2.24))
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def make_trainer(net, args, steps_per_epoch, kvstore):
    """Adam (or SGD with momentum), cosine-decayed to 1% of the rate, with weight decay."""
    schedule = None
    if args.lr_schedule == "cosine" and args.epochs > 1:
        schedule = mx.lr_scheduler.CosineScheduler(
            max_update=steps_per_epoch * args.epochs, base_lr=args.learning_rate,
            final_lr=args.learning_rate * 0.01)
    opt_params = {"learning_rate": args.learning_rate, "lr_scheduler": schedule,
                  "wd": args.weight_decay}
    if args.optimizer == "sgd":
        opt_params["momentum"] = 0.9
    return gluon.Trainer(net.collect_params(), args.optimizer, opt_params, kvstore=kvstore)


def run_epochs(net, trainer, epoch_batches, val_batches, epochs, learning_rate):
    """The training loop. ``epoch_batches()`` yields one epoch's (x, y) batches, so the input
    pipeline can be swapped (bench/train.py compares ours with a DataLoader)."""
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    history = []
    for epoch in range(1, epochs + 1):
        start = time.time()
        total_loss, correct, count = nd.zeros(1), nd.zeros(1), 0
        for x, y in epoch_batches():
            with autograd.record():
                out = net(x)
                loss = loss_fn(out, y)
            loss.backward()
            trainer.step(x.shape[0])
            total_loss += loss.sum()
            correct += (out.argmax(axis=1) == y.astype(out.dtype)).sum()
            count += x.shape[0]
        train_loss = total_loss.asscalar() / count
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged: loss is {train_loss} in epoch {epoch} "
                f"(learning rate {learning_rate}); lower LearningRate")
        val_loss, val_acc = evaluate(net, loss_fn, val_batches)
        seconds = time.time() - start
        history.append({"epoch": epoch, "train_loss": train_loss,
                        "train_accuracy": correct.asscalar() / count,
                        "validation_loss": val_loss, "validation_accuracy": val_acc,
                        "seconds": seconds, "images": count})
        print("epoch={epoch} train_loss={train_loss:.4f} train_accuracy={train_accuracy:.4f} "
              "validation_loss={validation_loss:.4f} validation_accuracy={validation_accuracy:.4f} "
              "seconds={seconds:.2f}".format(**history[-1]), flush=True)
    return history


def train(args):
    mx.random.seed(args.seed)
    rng = np.random.RandomState(args.seed)
    kv = create_kvstore(args.hosts)
    rank, workers = kv.rank, kv.num_workers
    train_x, train_y = load_channel(args.train)
    val_x, val_y = load_channel(args.validation)
    # Equal shards: with dist_sync every worker must take the same number of steps per epoch.
    per_worker = len(train_y) // workers
    train_x, train_y = to_ndarrays(train_x[rank::workers][:per_worker],
                                   train_y[rank::workers][:per_worker])
    print(f"host {args.current_host}: worker {rank + 1} of {workers}, {train_y.shape[0]} training "
          f"and {len(val_y)} validation images, kvstore {kv.type}", flush=True)
    net = make_net(args.hidden_units)
    trainer = make_trainer(net, args, math.ceil(train_y.shape[0] / args.batch_size), kv)
    history = run_epochs(
        net, trainer,
        lambda: batches(train_x, train_y, args.batch_size, rng.permutation(train_y.shape[0]),
                        drop_last=workers > 1),
        batches(*to_ndarrays(val_x, val_y), 1000), args.epochs, args.learning_rate)
    return net, rank, history


def export(net, model_dir, history):
    """Write the model directory SageMaker tars into model.tar.gz."""
    os.makedirs(model_dir, exist_ok=True)
    net.export(os.path.join(model_dir, "model"), epoch=0)
    code_dir = os.path.join(model_dir, "code")
    os.makedirs(code_dir, exist_ok=True)
    source = next((p for p in INFERENCE_CANDIDATES if os.path.isfile(p)), None)
    if source is None:
        raise TrainingError("inference.py is missing from the source directory")
    shutil.copyfile(source, os.path.join(code_dir, "inference.py"))
    with open(os.path.join(model_dir, "training-history.json"), "w") as handle:
        json.dump(history, handle, indent=1)


def main(argv=None):
    logging.basicConfig(level=logging.INFO)
    args = parse_args(argv)
    try:
        net, rank, history = train(args)
        if rank == 0:
            export(net, args.model_dir, history)
            print(f"model saved to {args.model_dir}", flush=True)
    except TrainingError as err:
        return fail(str(err), args.failure_file)  # the job's FailureReason, as it was
    return 0


if __name__ == "__main__":
    sys.exit(main())
