"""The inference handlers on every accepted payload kind, and on bad input."""
import io
import json

import numpy as np
import pytest

import inference


@pytest.fixture(scope="module")
def model(trained):
    return inference.model_fn(str(trained[0]))


@pytest.fixture(scope="module")
def digits(prepared):
    with np.load(prepared / "test" / "test.npz") as data:
        return data["images"][:100], data["labels"][:100]


def predict(model, body, content_type="application/json", accept="application/json"):
    data = inference.input_fn(body, content_type)
    out, out_type = inference.output_fn(inference.predict_fn(data, model), accept)
    assert out_type == "application/json"
    return json.loads(out)["predictions"]


def npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def test_lab_widget_payload_nested_1x28x28_of_zeros_and_ones(model, digits):
    images, labels = digits
    correct = 0
    for image, label in zip(images[:50], labels[:50]):
        widget = [(image > 127).astype(int).tolist()]  # what the lab's drawing widget sends
        [pred] = predict(model, json.dumps(widget))
        correct += pred["digit"] == label
        assert len(pred["probabilities"]) == 10
        assert sum(pred["probabilities"]) == pytest.approx(1, abs=1e-3)
    assert correct >= 45


@pytest.mark.parametrize("shape,scale", [
    ((784,), 255), ((784,), 1), ((28, 28), 255), ((28, 28), 1), ((1, 28, 28), 255),
    ((1, 784), 1)])
def test_json_single_image_in_every_shape_and_range(model, digits, shape, scale):
    image, label = digits[0][0], digits[1][0]
    values = (image / 255.0 * scale).reshape(shape).tolist()
    [pred] = predict(model, json.dumps(values))
    assert pred["digit"] == label


def test_json_batch_and_instances_object_classify_real_digits(model, digits):
    images, labels = digits
    batch = predict(model, json.dumps({"instances": images.reshape(100, 784).tolist()}))
    accuracy = np.mean([p["digit"] for p in batch] == labels)
    assert len(batch) == 100 and accuracy >= 0.93
    nested = predict(model, json.dumps(images[:10, None].tolist()))  # [N][1][28][28]
    assert [p["digit"] for p in nested] == [p["digit"] for p in batch[:10]]


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_npy_payloads(model, digits, dtype):
    images, labels = digits
    array = images[:20].astype(dtype)
    if dtype != np.uint8:
        array = array / 255.0
    preds = predict(model, npy(array), "application/x-npy")
    assert np.mean([p["digit"] for p in preds] == labels[:20]) >= 0.9
    [single] = predict(model, npy(images[0].reshape(784)), "application/x-npy")
    assert single["digit"] == labels[0]


def test_content_type_parameters_are_ignored(model, digits):
    [pred] = predict(model, json.dumps(digits[0][0].tolist()), "application/json; charset=utf-8")
    assert pred["digit"] == digits[1][0]


@pytest.mark.parametrize("body,content_type,status,message", [
    (b"", "application/json", 400, "empty"),
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"pixels": [1, 2]}', "application/json", 400, "instances"),
    (json.dumps([0.5] * 783).encode(), "application/json", 400, "cannot read shape [783]"),
    (json.dumps([[0.5] * 27] * 28).encode(), "application/json", 400, "cannot read shape"),
    (json.dumps([[1, 2], [3]]).encode(), "application/json", 400, "rectangular array"),
    (json.dumps(["a"] * 784).encode(), "application/json", 400, "rectangular array of numbers"),
    (json.dumps([-1] + [0] * 783).encode(), "application/json", 400, "0-1 or 0-255"),
    (json.dumps([300] + [0] * 783).encode(), "application/json", 400, "0-1 or 0-255"),
    (b"[NaN" + b", 0" * 783 + b"]", "application/json", 400, "NaN"),
    (b"\x93NUMPY garbage", "application/x-npy", 400, "not a valid .npy"),
    (b"1,2,3", "text/plain", 415, "not supported"),
])
def test_bad_input_is_an_input_error_with_status_and_message(body, content_type, status, message):
    with pytest.raises(inference.InputError) as err:
        inference.input_fn(body, content_type)
    assert err.value.status_code == status
    assert message in str(err.value)


def test_truncated_npy_is_rejected():
    body = npy(np.zeros((2, 784), dtype=np.float32))[:-100]
    with pytest.raises(inference.InputError, match="not a valid .npy"):
        inference.input_fn(body, "application/x-npy")


def test_unsupported_accept_is_406(model, digits):
    probs = inference.predict_fn(inference.input_fn(json.dumps(digits[0][0].tolist())), model)
    with pytest.raises(inference.InputError) as err:
        inference.output_fn(probs, "text/html")
    assert err.value.status_code == 406
