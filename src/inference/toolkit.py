"""Which functions serve a request, by the rules of AWS's MXNet serving toolkit, so that a
model made for its containers (the AWS lab's ``mnist.py`` among them) serves here unchanged.

- A module with ``transform_fn(model, body, content_type, accept)`` serves every request
  through it.
- Otherwise ``input_fn(body, content_type)``, ``predict_fn(data, model)`` and
  ``output_fn(prediction, accept)``, each the module's when it has one, else the toolkit's
  default for the kind of model (an MXNet Module or a Gluon block).
- ``model_fn(model_dir)`` is the module's, else the toolkit's default loader: a Module from
  ``model-symbol.json``, ``model-0000.params`` and ``model-shapes.json``.

Defaults take JSON and NPY (a Module also CSV) and answer JSON or NPY; other content types get
a 415 naming the type. Written from the toolkit's documented behaviour; no toolkit code here.
"""
import io
import json
import os

import numpy as np

JSON, NPY, CSV = "application/json", "application/x-npy", "text/csv"
MODEL_FILES = {"symbol": "model-symbol.json", "params": "model-0000.params",
               "shapes": "model-shapes.json"}


class HandlerError(Exception):
    """A request the handlers refuse, with its HTTP status."""

    def __init__(self, status_code, message):
        super().__init__(message)
        self.status_code, self.message = status_code, message


def default_model_fn(model_dir):
    """The toolkit's loader: a bound MXNet Module, batch size 1 unless the shapes file says."""
    import mxnet as mx

    missing = [f for f in MODEL_FILES.values() if not os.path.exists(os.path.join(model_dir, f))]
    if missing:
        raise ValueError(f"the default model_fn needs {', '.join(MODEL_FILES.values())}; "
                         f"missing {', '.join(missing)} (or give the module a model_fn)")
    with open(os.path.join(model_dir, MODEL_FILES["shapes"])) as handle:
        shapes = json.load(handle)
    data_shapes = [(s["name"], tuple(s["shape"])) for s in shapes]
    symbol, args, aux = mx.model.load_checkpoint(os.path.join(model_dir, "model"), 0)
    module = mx.mod.Module(symbol=symbol, data_names=[n for n, _ in data_shapes],
                           label_names=None, context=mx.cpu())
    module.bind(for_training=False, data_shapes=data_shapes)
    module.set_params(args, aux, allow_missing=True)
    return module


def decode(body, content_type, allowed):
    if content_type not in allowed:
        raise HandlerError(415, f"content type {content_type!r} is not supported by the "
                                f"default input_fn; it takes {', '.join(allowed)}")
    if isinstance(body, str):
        body = body.encode("utf-8")
    try:
        if content_type == JSON:
            return np.array(json.loads(body), dtype="float32")
        if content_type == NPY:
            return np.load(io.BytesIO(body), allow_pickle=False)
        return np.genfromtxt(io.BytesIO(body), delimiter=",", dtype="float32", ndmin=2)
    except ValueError as err:
        raise HandlerError(400, f"could not read the {content_type} body: {err}")


def encode(array, accept):
    array = array.asnumpy() if hasattr(array, "asnumpy") else np.asarray(array)
    if accept in (None, "", "*/*", JSON):
        return json.dumps(array.tolist()), JSON
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue(), NPY
    raise HandlerError(406, f"accept type {accept!r} is not supported by the default "
                            f"output_fn; it answers {JSON} or {NPY}")


class ModuleDefaults:
    """The toolkit's defaults for an MXNet Module: rows padded to the Module's batch."""

    def input_fn(self, model, body, content_type):
        import mxnet as mx

        array = decode(body, content_type, (JSON, NPY, CSV))
        (_, shape), = model.data_shapes
        if content_type == CSV:
            array = array.reshape((-1,) + tuple(shape[1:]))
        batch = shape[0]
        rows = array.shape[0]
        iterator = mx.io.NDArrayIter(mx.nd.array(array), batch_size=batch,
                                     last_batch_handle="pad")
        return iterator, rows

    def predict_fn(self, data, model):
        iterator, rows = data
        return model.predict(iterator)[:rows]


class BlockDefaults:
    """The toolkit's defaults for a Gluon block."""

    def input_fn(self, model, body, content_type):
        import mxnet as mx

        return mx.nd.array(decode(body, content_type, (JSON, NPY)))

    def predict_fn(self, data, model):
        return model(data)


class Handlers:
    """The model and the functions that serve it, chosen once when the server starts."""

    def __init__(self, module, model_dir):
        self.module = module
        self.model = getattr(module, "model_fn", default_model_fn)(model_dir)
        self.transform_fn = getattr(module, "transform_fn", None)
        self.defaults = None if self.transform_fn else self._defaults_for(self.model)

    @staticmethod
    def _defaults_for(model):
        import mxnet as mx

        if isinstance(model, mx.module.BaseModule):
            return ModuleDefaults()
        if isinstance(model, mx.gluon.Block):
            return BlockDefaults()
        return None  # the module's own input/predict/output_fn must then serve it

    def _own(self, name):
        function = getattr(self.module, name, None)
        if function is None and self.defaults is None:
            raise HandlerError(500, f"the model is a {type(self.model).__name__}, which has no "
                                    f"default {name}: the handler module must define it")
        return function

    def __call__(self, body, content_type, accept):
        """(answer body, content type) for one request."""
        if self.transform_fn is not None:
            result = self.transform_fn(self.model, body, content_type, accept)
            return result if isinstance(result, tuple) else (result, accept)
        input_fn, predict_fn, output_fn = (self._own(n) for n in (
            "input_fn", "predict_fn", "output_fn"))
        data = input_fn(body, content_type) if input_fn else \
            self.defaults.input_fn(self.model, body, content_type)
        prediction = predict_fn(data, self.model) if predict_fn else \
            self.defaults.predict_fn(data, self.model)
        result = output_fn(prediction, accept) if output_fn else encode(prediction, accept)
        return result if isinstance(result, tuple) else (result, accept)
