"""Model handlers under SageMaker's MXNet inference contract: model_fn, input_fn, predict_fn,
output_fn.

The same file serves in AWS's MXNet serving containers (sagemaker-mxnet-inference) and in this
project's own model server. Accepted requests:
- ``application/json``: the AWS lab widget's nested [1][28][28] of 0/1, or 784 / 28x28 values per
  image, one image or a batch, in 0-1 or 0-255 (a body ``{"instances": ...}`` also works);
- ``application/x-npy``: a NumPy array of the same shapes;
- ``text/csv``: one image per line, 784 values;
- ``image/png``, ``image/jpeg``: a picture of a digit, any size, converted the MNIST way
  (grayscale, inverted when the background is light, fitted into 20x20, centred by mass in 28x28).
The answer is JSON, ``{"predictions": [{"digit": d, "probabilities": [p0 ... p9]}, ...]}``, or
with ``Accept: text/csv`` one line per image: the digit, then the ten probabilities.
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
CSV = "text/csv"
IMAGES = ("image/png", "image/jpeg")
MAX_IMAGES = 1000
MAX_PIXELS = 2048 * 2048  # a picture larger than this is refused before it is decoded
PICTURE_FORMATS = ["PNG", "JPEG"]  # nothing else is even opened (no GIF, BMP, EPS...)


class InputError(_ToolkitError):
    """A request the model cannot answer; ``status_code`` is the HTTP status to reply with."""

    def __init__(self, message, status_code=400):
        super().__init__(status_code, message, message)

    def __str__(self):
        return self.message


def forward(model, batch):
    """Logits for an (N, 784) float32 batch, as numpy.

    A request is one image of a ~110k-multiply MLP; MXNet's engine spends ~200 us per call on
    bookkeeping around ~10 us of arithmetic. model_fn therefore also compiles graphs made only of
    FullyConnected and activation layers (this project's) to numpy, checks on a probe batch that
    both give the same outputs, and attaches the result as ``model.numpy_layers``; any other
    graph runs on MXNet. The model stays a Gluon block, as AWS's MXNet serving stack requires.
    """
    layers = getattr(model, "numpy_layers", None)
    if layers is None:
        import mxnet as mx
        return model(mx.nd.array(batch, dtype=np.float32)).asnumpy()
    for layer in layers:
        batch = layer(batch)
    return batch


def _dense(weight, bias):
    weight = weight.T.astype(np.float32).copy()
    if bias is None:
        return lambda x: x @ weight
    bias = bias.astype(np.float32)
    return lambda x: x @ weight + bias


_ACTIVATIONS = {"relu": lambda x: np.maximum(x, 0), "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
                "tanh": np.tanh}


def compile_numpy(symbol_json, params):
    """The graph as a list of numpy functions applied in turn, or None when it holds anything
    but a chain of FullyConnected and activation layers."""
    graph = json.loads(symbol_json)
    nodes, heads = graph["nodes"], graph["heads"]
    layers, current = [], None
    for index, node in enumerate(nodes):
        op, attrs = node["op"], node.get("attrs", node.get("attr", {}))
        if op == "null":
            continue
        sources = [nodes[i[0]] for i in node["inputs"]]
        data = node["inputs"][0][0]
        if current is not None and data != current or current is None and \
                sources[0]["name"] != "data":
            return None  # not a simple chain
        if op == "FullyConnected":
            weight = params.get(sources[1]["name"])
            bias = None if attrs.get("no_bias") in ("True", "1") else params.get(
                sources[2]["name"])
            if weight is None:
                return None
            layers.append(_dense(weight, bias))
        elif op in ("Activation", "relu") and attrs.get("act_type", "relu") in _ACTIVATIONS:
            layers.append(_ACTIVATIONS[attrs.get("act_type", "relu")])
        elif op in ("Dropout", "Flatten", "flatten"):
            pass
        else:
            return None
        current = index
    return layers if layers and heads[0][0] == current else None


def model_fn(model_dir):
    """Load the exported Gluon network (model-symbol.json + model-0000.params)."""
    import mxnet as mx  # imported here so input handling stays importable without MXNet

    symbol_file = os.path.join(model_dir, "model-symbol.json")
    params_file = os.path.join(model_dir, "model-0000.params")
    with warnings.catch_warnings():  # "Cannot decide type for data": it is float32
        warnings.simplefilter("ignore", UserWarning)
        net = mx.gluon.SymbolBlock.imports(symbol_file, ["data"], params_file, ctx=mx.cpu())
    net.hybridize(static_alloc=True)
    params = {name: p.data().asnumpy() for name, p in net.collect_params().items()}
    with open(symbol_file) as handle:
        layers = compile_numpy(handle.read(), params)
    if layers is not None:
        probe = np.random.RandomState(0).rand(64, 784).astype(np.float32)
        reference = forward(net, probe)
        net.numpy_layers = layers
        if not np.allclose(forward(net, probe), reference, rtol=1e-4, atol=1e-4):
            net.numpy_layers = None
    return net


def _base_type(content_type):
    return (content_type or JSON).split(";")[0].strip().lower()


def _decode_json(body):
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"the body is not valid JSON: {err}")
    except RecursionError:
        raise InputError("the JSON body is nested too deeply")
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


def _decode_csv(body):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("the CSV body is not UTF-8 text")
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append([float(v) for v in line.split(",")])
        except ValueError:
            raise InputError(f"CSV line {number} holds a value that is not a number")
    if not rows:
        raise InputError("the CSV body holds no rows")
    if len({len(r) for r in rows}) != 1:
        raise InputError("CSV lines have different numbers of values; send 784 per line")
    return rows


def _decode_picture(body):
    """A PNG or JPEG of a digit -> 28x28 in MNIST's convention (white digit on black)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is part of the job environment
        raise InputError("this server cannot read pictures (Pillow is not installed)", 415)
    try:
        picture = Image.open(io.BytesIO(body), formats=PICTURE_FORMATS)
        if picture.width * picture.height > MAX_PIXELS:
            raise InputError(f"the picture is {picture.width}x{picture.height}; at most "
                             f"{MAX_PIXELS} pixels", 413)
        if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
            background = Image.new("RGBA", picture.size, (255, 255, 255, 255))
            picture = Image.alpha_composite(background, picture.convert("RGBA"))
        gray = np.asarray(picture.convert("L"), dtype=np.float32)
    except InputError:
        raise
    except Exception as err:  # Pillow raises many types for truncated or foreign data
        raise InputError(f"the body is not a readable PNG or JPEG picture: "
                         f"{type(err).__name__}: {err}"[:300])
    return mnist_style(gray)


def mnist_style(gray):
    """Grayscale picture (any size, 0-255) -> 28x28 float32 in 0-1, the way MNIST was made."""
    from PIL import Image

    def background(image):
        return float(np.median(np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])))

    if background(gray) > 127:  # dark ink on light paper: MNIST is light ink on black
        gray = 255.0 - gray
    gray = np.clip(gray - background(gray), 0, 255)
    if gray.max() < 1e-3:
        raise InputError("the picture is blank: no digit found")
    ys, xs = np.nonzero(gray > 0.1 * gray.max())
    crop = gray[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    height, width = crop.shape
    scale = 20.0 / max(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    small = np.asarray(Image.fromarray(crop.astype(np.uint8)).resize(size, Image.LANCZOS),
                       dtype=np.float32)
    canvas = np.zeros((28, 28), dtype=np.float32)
    total = small.sum()
    if total <= 0:
        raise InputError("the picture is blank: no digit found")
    cy = (small.sum(axis=1) * np.arange(small.shape[0])).sum() / total
    cx = (small.sum(axis=0) * np.arange(small.shape[1])).sum() / total
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas / max(canvas.max(), 1e-6)


def to_images(data):
    """Turn decoded input into float32 images of shape (N, 784) with values in [0, 1]."""
    try:
        array = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError, OverflowError, RecursionError):
        raise InputError("the input must be a rectangular array of numbers in 0-255")
    if array.ndim == 0 or array.size == 0:
        raise InputError("the input holds no pixels: send 784 or 28x28 values per image")
    shape = array.shape
    if array.ndim in (3, 4) and shape[-3:] == (28, 28, 1):  # channel-last (TensorFlow, Keras)
        array, shape = array.reshape(-1, 28, 28), (array.size // 784, 28, 28)
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
            "one image or a batch ([N][784], [N][28][28], [N][1][28][28] or [N][28][28][1])")
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
    if content_type == CSV:
        return to_images(_decode_csv(request_body))
    if content_type in IMAGES:
        return to_images(_decode_picture(request_body))
    raise InputError(f"content type {content_type!r} is not supported; use {JSON}, {NPY}, "
                     f"{CSV}, image/png or image/jpeg", 415)


def predict_fn(input_data, model):
    """Class probabilities, shape (N, 10)."""
    logits = forward(model, np.asarray(input_data, dtype=np.float32))
    logits = logits - logits.max(axis=1, keepdims=True)
    odds = np.exp(logits)
    return odds / odds.sum(axis=1, keepdims=True)


def output_fn(prediction, accept=JSON):
    """The digit and the ten probabilities per image, as JSON (or CSV)."""
    accept = _base_type(accept)
    if accept == CSV:
        return "".join(f"{int(np.argmax(row))}," + ",".join(f"{float(p):.6f}" for p in row)
                       + "\n" for row in prediction), CSV
    if accept not in (JSON, "*/*"):
        raise InputError(f"cannot answer in {accept!r}; accept {JSON} or {CSV}", 406)
    body = {"predictions": [
        {"digit": int(np.argmax(row)), "probabilities": [round(float(p), 6) for p in row]}
        for row in prediction
    ]}
    return json.dumps(body), JSON
