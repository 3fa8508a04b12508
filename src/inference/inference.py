"""Model handlers under SageMaker's MXNet inference contract: model_fn, input_fn, predict_fn, output_fn.

The same file serves in AWS's MXNet serving containers (sagemaker-mxnet-inference) and in this
project's own model server. Accepted requests:
- ``application/json``: the AWS lab widget's nested [1][28][28] of 0/1, or 784 / 28x28 values per
  image, one image or a batch, in 0-1 or 0-255 (a body ``{"instances": ...}`` also works);
- ``application/x-npy``: a NumPy array of the same shapes.
The answer is JSON: ``{"predictions": [{"digit": d, "probabilities": [p0 ... p9]}, ...]}``.
Bad input raises InputError, which both servers turn into an HTTP 4xx with its message.
"""
import io
import json
import os
import warnings

import numpy as np

try:  # AWS's serving toolkit maps these errors to their HTTP status
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ToolkitError
except ImportError:  # pragma: no cover - outside AWS's serving stack
    class _ToolkitError(Exception):
        def __init__(self, status_code, message, phrase):
            super().__init__(status_code, message, phrase)
            self.status_code, self.message, self.phrase = status_code, message, phrase

JSON = "application/json"
NPY = "application/x-npy"
MAX_IMAGES = 1000


class InputError(_ToolkitError):
    """A request the model cannot answer; ``status_code`` is the HTTP status to reply with."""

    def __init__(self, message, status_code=400):
        super().__init__(status_code, message, message)

    def __str__(self):
        return self.message


def model_fn(model_dir):
    """Load the exported Gluon network (model-symbol.json + model-0000.params)."""
    import mxnet as mx  # imported here so input handling stays importable without MXNet

    with warnings.catch_warnings():  # "Cannot decide type for data": it is float32
        warnings.simplefilter("ignore", UserWarning)
        net = mx.gluon.SymbolBlock.imports(
            os.path.join(model_dir, "model-symbol.json"), ["data"],
            os.path.join(model_dir, "model-0000.params"), ctx=mx.cpu())
    net.hybridize(static_alloc=True)
    return net


def _base_type(content_type):
    return (content_type or JSON).split(";")[0].strip().lower()


def _decode_json(body):
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"the body is not valid JSON: {err}")
    if isinstance(data, dict):
        for key in ("instances", "inputs", "data"):
            if key in data:
                return data[key]
        raise InputError('a JSON object needs an "instances" key holding the images')
    return data


def _decode_npy(body):
    try:
        return np.load(io.BytesIO(body), allow_pickle=False)
    except Exception as err:  # numpy raises several types for truncated or foreign data
        raise InputError(f"the body is not a valid .npy array: {err}")


def to_images(data):
    """Turn decoded input into float32 images of shape (N, 784) with values in [0, 1]."""
    try:
        array = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise InputError("the input must be a rectangular array of numbers")
    if array.size == 0:
        raise InputError("the input holds no pixels")
    shape = array.shape
    if shape[-2:] == (28, 28):
        array = array.reshape(-1, 784) if array.ndim in (2, 3, 4) and (
            array.ndim < 4 or shape[1] == 1) else None
    elif shape[-1] == 784 and array.ndim in (1, 2):
        array = array.reshape(-1, 784)
    else:
        array = None
    if array is None:
        raise InputError(
            f"cannot read shape {list(shape)} as images: send 784 or 28x28 values per image, "
            "one image or a batch ([N][784], [N][28][28] or [N][1][28][28])")
    if len(array) > MAX_IMAGES:
        raise InputError(f"{len(array)} images in one request; at most {MAX_IMAGES}", 413)
    if not np.isfinite(array).all():
        raise InputError("the input holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise InputError(f"pixel values must lie in 0-1 or 0-255, got {low:g} to {high:g}")
    return array / 255.0 if high > 1.0 else array


def input_fn(request_body, request_content_type=JSON):
    """Decode a request body into an (N, 784) float32 batch."""
    content_type = _base_type(request_content_type)
    if isinstance(request_body, str):
        request_body = request_body.encode("utf-8")
    if not request_body:
        raise InputError("the request body is empty")
    if content_type == JSON:
        return to_images(_decode_json(request_body))
    if content_type == NPY:
        return to_images(_decode_npy(request_body))
    raise InputError(f"content type {content_type!r} is not supported; use {JSON} or {NPY}", 415)


def predict_fn(input_data, model):
    """Class probabilities, shape (N, 10)."""
    import mxnet as mx

    output = model(mx.nd.array(input_data, dtype=np.float32))
    return mx.nd.softmax(output, axis=1).asnumpy()


def output_fn(prediction, accept=JSON):
    """The digit and the ten probabilities per image, as JSON."""
    accept = _base_type(accept)
    if accept not in (JSON, "*/*"):
        raise InputError(f"cannot answer in {accept!r}; accept {JSON}", 406)
    body = {"predictions": [
        {"digit": int(np.argmax(row)), "probabilities": [round(float(p), 6) for p in row]}
        for row in prediction
    ]}
    return json.dumps(body), JSON
