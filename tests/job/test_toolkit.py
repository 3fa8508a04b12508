"""The MXNet serving toolkit's rules in the local model server (toolkit.py): transform_fn when
the module has it, else each handler the module's or the default, and the default loader."""
import json
import types

import mxnet as mx
import numpy as np
import pytest

import toolkit


def _net(model_dir=None):
    """A small Gluon MLP, exported as the toolkit's default loader expects it."""
    mx.random.seed(0)
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(8, activation="relu"), mx.gluon.nn.Dense(3))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    net(mx.nd.zeros((1, 4)))
    if model_dir is not None:
        net.export(str(model_dir / "model"), epoch=0)
        (model_dir / "model-shapes.json").write_text(json.dumps([{"name": "data",
                                                                  "shape": [1, 4]}]))
    return net


ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, 0.0, -1.0, 2.0], [0.5, 0.5, 0.5, 0.5]]


def test_a_module_with_no_handlers_gets_the_default_loader_and_handlers(tmp_path):
    net = _net(tmp_path)
    handlers = toolkit.Handlers(types.ModuleType("user_inference"), str(tmp_path))
    body, content_type = handlers(json.dumps(ROWS), "application/json", "application/json")
    assert content_type == "application/json"
    expected = net(mx.nd.array(ROWS)).asnumpy()
    assert np.allclose(json.loads(body), expected, atol=1e-5)  # 3 rows through a batch of 1
    with pytest.raises(toolkit.HandlerError) as err:
        handlers("x", "image/png", "application/json")
    assert err.value.status_code == 415 and "'image/png'" in err.value.message
    with pytest.raises(toolkit.HandlerError) as err:
        handlers(json.dumps(ROWS), "application/json", "text/html")
    assert err.value.status_code == 406


def test_transform_fn_serves_everything_when_the_module_has_it(tmp_path):
    """The AWS lab's style: model_fn and transform_fn only."""
    calls = []
    module = types.ModuleType("user_inference")
    module.model_fn = lambda model_dir: "the model"

    def transform_fn(model, data, input_content_type, output_content_type):
        calls.append((model, data, input_content_type, output_content_type))
        return json.dumps({"ok": True}), output_content_type

    module.transform_fn = transform_fn
    module.output_fn = lambda prediction, accept: pytest.fail("transform_fn comes first")
    handlers = toolkit.Handlers(module, str(tmp_path))
    assert handlers(b"[1]", "application/json", "application/json") == (
        '{"ok": true}', "application/json")
    assert calls == [("the model", b"[1]", "application/json", "application/json")]


def test_each_missing_handler_falls_back_to_the_blocks_default(tmp_path):
    net = _net()
    module = types.ModuleType("user_inference")
    module.model_fn = lambda model_dir: net
    module.input_fn = lambda body, content_type: mx.nd.array(json.loads(body)) * 0
    handlers = toolkit.Handlers(module, str(tmp_path))  # predict_fn, output_fn: the defaults
    body, _ = handlers(json.dumps(ROWS), "application/json", "application/json")
    assert np.allclose(json.loads(body), net(mx.nd.zeros((3, 4))).asnumpy(), atol=1e-5)


def test_a_model_no_default_knows_needs_its_own_handlers(tmp_path):
    module = types.ModuleType("user_inference")
    module.model_fn = lambda model_dir: {"not": "mxnet"}
    handlers = toolkit.Handlers(module, str(tmp_path))
    with pytest.raises(toolkit.HandlerError) as err:
        handlers(b"[1]", "application/json", "application/json")
    assert err.value.status_code == 500 and "no default input_fn" in err.value.message


def test_the_default_loader_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="missing model-symbol.json, model-0000.params, "
                                         "model-shapes.json"):
        toolkit.Handlers(types.ModuleType("user_inference"), str(tmp_path))
