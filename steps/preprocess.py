"""PrepareData: fetch the four MNIST files, verify them, split, and write compact arrays.

Runs as a SageMaker Processing job (python3 in the MXNet container) and locally as a
subprocess. Needs only numpy, plus boto3 for s3:// sources. Outputs, under --output-dir:
``train/train.npz``, ``validation/validation.npz``, ``test/test.npz`` (uint8 images
N x 28 x 28 and uint8 labels) and ``report/report.json``.
"""
import argparse
import gzip
import hashlib
import json
import os
import sys
import urllib.parse
import urllib.request

import numpy as np

from job_contract import PROCESSING_FAILURE_FILE, fail

# SHA-256 of the decompressed IDX files: the canonical MNIST digests, the same for any gzip of them.
CANONICAL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
# AWS's public copy keeps training files under train/ and test files under test/.
SUBFOLDER = {"train": "train", "t10k": "test"}


class DataError(Exception):
    """The source is unreachable or its content is not MNIST."""


def _candidates(source, name):
    """Places a file may live in: flat, or in AWS's train/ test/ layout."""
    base = source.rstrip("/")
    sub = SUBFOLDER[name.split("-")[0]]
    return [f"{base}/{name}.gz", f"{base}/{sub}/{name}.gz"]


def _read_s3(uri):
    import boto3  # only needed for s3:// sources
    from botocore.exceptions import ClientError

    parsed = urllib.parse.urlparse(uri)
    try:
        obj = boto3.client("s3").get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
    except ClientError as err:
        if err.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise
    return obj["Body"].read()


def _read_https(uri):
    try:
        with urllib.request.urlopen(uri, timeout=60) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def _read_local(path):
    if path.startswith("file://"):
        path = urllib.parse.urlparse(path).path
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as handle:
        return handle.read()


def fetch(source, name):
    """Return the decompressed bytes of one MNIST file from an https, s3 or local source."""
    scheme = urllib.parse.urlparse(source).scheme
    reader = {"s3": _read_s3, "https": _read_https, "http": _read_https}.get(scheme, _read_local)
    tried = _candidates(source, name)
    for uri in tried:
        data = reader(uri)
        if data is not None:
            try:
                return gzip.decompress(data)
            except OSError as err:
                raise DataError(f"{uri} is not a gzip file: {err}")
    raise DataError(f"{name}.gz not found in {source} (tried {', '.join(tried)})")


def verify(name, raw):
    actual = hashlib.sha256(raw).hexdigest()
    expected = CANONICAL_SHA256[name]
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {name}: expected sha256 {expected}, got {actual}"
        )


def parse_idx(raw):
    """Parse an IDX file (big-endian header, uint8 payload) into an array."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError("not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def stratified_split(labels, fraction, seed):
    """Indices (train, validation): the same share of every class goes to validation."""
    rng = np.random.RandomState(seed)
    train_idx, val_idx = [], []
    for digit in range(10):
        idx = np.flatnonzero(labels == digit)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    train_idx, val_idx = np.concatenate(train_idx), np.concatenate(val_idx)
    rng.shuffle(train_idx)
    rng.shuffle(val_idx)
    return train_idx, val_idx


def save(output_dir, split, images, labels):
    folder = os.path.join(output_dir, split)
    os.makedirs(folder, exist_ok=True)
    np.savez(os.path.join(folder, f"{split}.npz"), images=images, labels=labels)


def run(source, output_dir, validation_fraction, seed):
    arrays = {}
    for name in CANONICAL_SHA256:
        raw = fetch(source, name)
        verify(name, raw)
        arrays[name] = parse_idx(raw)
        print(f"fetched and verified {name}: shape {arrays[name].shape}", flush=True)
    train_x, train_y = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    test_x, test_y = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    train_idx, val_idx = stratified_split(train_y, validation_fraction, seed)
    save(output_dir, "train", train_x[train_idx], train_y[train_idx])
    save(output_dir, "validation", train_x[val_idx], train_y[val_idx])
    save(output_dir, "test", test_x, test_y)
    report = {
        "source": source,
        "seed": seed,
        "sha256": dict(CANONICAL_SHA256),  # each file was verified against these above
        "counts": {"train": len(train_idx), "validation": len(val_idx), "test": len(test_y)},
        "class_counts": {
            split: np.bincount(y, minlength=10).tolist()
            for split, y in (("train", train_y[train_idx]), ("validation", train_y[val_idx]),
                             ("test", test_y))
        },
    }
    os.makedirs(os.path.join(output_dir, "report"), exist_ok=True)
    with open(os.path.join(output_dir, "report", "report.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report["counts"]), flush=True)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="https://, s3:// or local folder")
    parser.add_argument("--output-dir", default="/opt/ml/processing")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--failure-file", default=PROCESSING_FAILURE_FILE)
    args = parser.parse_args(argv)
    if not 0 < args.validation_fraction < 1:
        parser.error("--validation-fraction must be between 0 and 1")
    try:
        run(args.source, args.output_dir, args.validation_fraction, args.seed)
    except DataError as err:
        return fail(f"PrepareData failed: {err}", args.failure_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
