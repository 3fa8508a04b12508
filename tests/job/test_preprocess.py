"""PrepareData on the real MNIST files: verification, split, outputs, and its failures."""
import gzip
import hashlib
import json
import pathlib
import shutil

import numpy as np
import pytest

import preprocess
from conftest import MNIST, run_script

PUBLISHED_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
PUBLISHED_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def load(folder, split):
    with np.load(folder / split / f"{split}.npz") as data:
        return data["images"], data["labels"]


def test_outputs_cover_all_of_mnist_with_a_stratified_split(prepared):
    train_x, train_y = load(prepared, "train")
    val_x, val_y = load(prepared, "validation")
    test_x, test_y = load(prepared, "test")
    assert train_x.shape == (54001, 28, 28) and train_x.dtype == np.uint8
    assert val_x.shape == (5999, 28, 28)
    assert test_x.shape == (10000, 28, 28)
    combined = np.bincount(np.concatenate([train_y, val_y]), minlength=10)
    assert combined.tolist() == PUBLISHED_TRAIN_COUNTS
    assert np.bincount(test_y, minlength=10).tolist() == PUBLISHED_TEST_COUNTS
    share = np.bincount(val_y, minlength=10) / np.array(PUBLISHED_TRAIN_COUNTS)
    assert np.allclose(share, 0.1, atol=0.001), share
    report = json.loads((prepared / "report" / "report.json").read_text())
    assert report["counts"] == {"train": 54001, "validation": 5999, "test": 10000}
    # the lineage the model package carries: digests of the decompressed files, as verified
    assert report["sha256"]["t10k-labels-idx1-ubyte"] == hashlib.sha256(
        gzip.decompress((pathlib.Path(MNIST) / "t10k-labels-idx1-ubyte.gz").read_bytes())
    ).hexdigest()


def test_split_is_seeded_and_disjoint():
    labels = np.repeat(np.arange(10), 100)
    a_train, a_val = preprocess.stratified_split(labels, 0.2, seed=7)
    b_train, b_val = preprocess.stratified_split(labels, 0.2, seed=7)
    _, c_val = preprocess.stratified_split(labels, 0.2, seed=8)
    assert a_val.tolist() == b_val.tolist() and a_train.tolist() == b_train.tolist()
    assert a_val.tolist() != c_val.tolist()
    assert not set(a_train) & set(a_val)
    assert len(a_train) + len(a_val) == 1000
    assert np.bincount(labels[a_val]).tolist() == [20] * 10


def test_reads_aws_layout_with_train_and_test_folders(tmp_path):
    source = tmp_path / "aws"
    for name in preprocess.CANONICAL_SHA256:
        sub = "train" if name.startswith("train") else "test"
        (source / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy(f"{MNIST}/{name}.gz", source / sub / f"{name}.gz")
    raw = preprocess.fetch(str(source), "t10k-labels-idx1-ubyte")
    preprocess.verify("t10k-labels-idx1-ubyte", raw)
    assert preprocess.parse_idx(raw).shape == (10000,)


def test_checksum_mismatch_fails_the_job_naming_file_and_digests(tmp_path):
    source = tmp_path / "tampered"
    shutil.copytree(MNIST, source)
    raw = bytearray(gzip.decompress((source / "train-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed
    (source / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    failure = tmp_path / "failure"
    proc = run_script("steps/preprocess.py", "--source", source, "--output-dir", tmp_path / "out",
                      "--failure-file", failure, check=False)
    assert proc.returncode == 1
    message = failure.read_text()
    assert "train-labels-idx1-ubyte" in message
    assert preprocess.CANONICAL_SHA256["train-labels-idx1-ubyte"] in message
    import hashlib
    assert hashlib.sha256(bytes(raw)).hexdigest() in message
    assert not (tmp_path / "out" / "train").exists()


@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte", "train-images-idx3-ubyte"])
def test_every_file_is_checked_images_too(tmp_path, monkeypatch, name):
    """One pixel changed in an image file fails as a changed label does, and a run verifies
    each of the four files before using it."""
    raw = bytearray(gzip.decompress((pathlib.Path(MNIST) / f"{name}.gz").read_bytes()))
    raw[5000] = (raw[5000] + 1) % 256
    with pytest.raises(preprocess.DataError, match=f"checksum mismatch for {name}"):
        preprocess.verify(name, bytes(raw))
    verified = []
    real = preprocess.verify
    monkeypatch.setattr(preprocess, "verify",
                        lambda file_name, data: (verified.append(file_name),
                                                 real(file_name, data)))
    preprocess.run(MNIST, str(tmp_path / "out"), 0.1, 0)
    assert sorted(verified) == sorted(preprocess.CANONICAL_SHA256)


def test_missing_file_names_the_places_tried(tmp_path):
    with pytest.raises(preprocess.DataError, match="t10k-images-idx3-ubyte.gz not found"):
        preprocess.fetch(str(tmp_path), "t10k-images-idx3-ubyte")


def test_not_gzip_is_a_clear_error(tmp_path):
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain text")
    with pytest.raises(preprocess.DataError, match="not a gzip file"):
        preprocess.fetch(str(tmp_path), "t10k-labels-idx1-ubyte")


def test_bad_validation_fraction_is_a_usage_error(tmp_path):
    proc = run_script("steps/preprocess.py", "--source", MNIST, "--output-dir", tmp_path,
                      "--validation-fraction", "1.5", check=False)
    assert proc.returncode == 2 and "--validation-fraction" in proc.stderr


def test_fetches_over_http_from_a_loopback_server():
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=MNIST)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.log_message = lambda *args: None
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        raw = preprocess.fetch(base, "t10k-labels-idx1-ubyte")
        preprocess.verify("t10k-labels-idx1-ubyte", raw)
        with pytest.raises(preprocess.DataError, match="not found"):
            preprocess.fetch(base + "missing/", "t10k-labels-idx1-ubyte")
    finally:
        server.shutdown()


def test_fetches_from_s3_in_awss_train_test_layout(monkeypatch):
    import boto3
    from moto import mock_aws

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="samples")
        with open(f"{MNIST}/t10k-labels-idx1-ubyte.gz", "rb") as handle:
            s3.put_object(Bucket="samples", Key="datasets/MNIST/test/t10k-labels-idx1-ubyte.gz",
                          Body=handle.read())
        raw = preprocess.fetch("s3://samples/datasets/MNIST/", "t10k-labels-idx1-ubyte")
        preprocess.verify("t10k-labels-idx1-ubyte", raw)
        with pytest.raises(preprocess.DataError, match="not found"):
            preprocess.fetch("s3://samples/datasets/MNIST/", "t10k-images-idx3-ubyte")
