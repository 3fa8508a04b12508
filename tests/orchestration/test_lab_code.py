"""The AWS lab's own style of code on the local service, with the unchanged SageMaker SDK: an
entry point that trains and serves through ``model_fn`` + ``transform_fn``, and one with no
handlers at all (the MXNet serving toolkit's default loader and handlers serve it).
``fit(logs=True)`` shows the job's Starting and Completed transitions, as on SageMaker."""
import numpy as np
import pytest

from pipeline.definition import SDK_CONFIG
from pipelinehelpers import BUCKET, idx

pytestmark = pytest.mark.slow

TRAINING = '''
import argparse, json, os
import mxnet as mx
import numpy as np


def train(args):
    with np.load(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "train.npz")) as data:
        images = data["images"].reshape(-1, 784).astype("float32") / 255
        labels = data["labels"].astype("float32")
    net = mx.gluon.nn.HybridSequential()
    net.add(mx.gluon.nn.Dense(64, activation="relu"), mx.gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier())
    net.hybridize()
    trainer = mx.gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.003})
    loss = mx.gluon.loss.SoftmaxCrossEntropyLoss()
    batches = mx.io.NDArrayIter(images, labels, batch_size=128, shuffle=True)
    for epoch in range(args.epochs):
        batches.reset()
        for batch in batches:
            with mx.autograd.record():
                step_loss = loss(net(batch.data[0]), batch.label[0])
            step_loss.backward()
            trainer.step(batch.data[0].shape[0])
        print(f"epoch {epoch} done", flush=True)
    net.export(os.path.join(os.environ["SM_MODEL_DIR"], "model"), epoch=0)
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "model-shapes.json"), "w") as handle:
        json.dump([{"name": "data", "shape": [1, 784]}], handle)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    train(parser.parse_args())
'''

HANDLERS = '''

def model_fn(model_dir):
    return mx.gluon.SymbolBlock.imports(os.path.join(model_dir, "model-symbol.json"), ["data"],
                                        os.path.join(model_dir, "model-0000.params"))


def transform_fn(net, data, input_content_type, output_content_type):
    images = mx.nd.array(json.loads(data)).reshape((-1, 784)) / 255
    digits = net(images).argmax(axis=1).asnumpy().astype(int).tolist()
    return json.dumps({"digits": digits}), output_content_type
'''


@pytest.fixture(scope="module")
def lab(service, tmp_path_factory):
    import boto3
    import sagemaker

    patch = pytest.MonkeyPatch()
    for variable in ("S3", "CLOUDWATCH_LOGS", "SAGEMAKER", "SAGEMAKER_RUNTIME"):
        patch.setenv(f"AWS_ENDPOINT_URL_{variable}", service.url)  # (before the SDK's clients)
    folder = tmp_path_factory.mktemp("lab-data")
    images, labels = idx("train-images-idx3-ubyte")[:12000], idx("train-labels-idx1-ubyte")[:12000]
    np.savez(folder / "train.npz", images=images, labels=labels)
    s3 = service.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(folder / "train.npz"), BUCKET, "lab-code/train/train.npz")
    session = sagemaker.Session(
        boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="local",
                                   aws_secret_access_key="local"),
        sagemaker_client=service.client("sagemaker"),
        sagemaker_runtime_client=service.client("sagemaker-runtime"), default_bucket=BUCKET,
        sagemaker_config=SDK_CONFIG)
    yield session, f"s3://{BUCKET}/lab-code/train"
    patch.undo()


@pytest.mark.parametrize("handlers", ["model_fn and transform_fn", "none"])
def test_the_lab_flow_trains_deploys_and_predicts(service, lab, handlers, tmp_path, capsys):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.mxnet import MXNet
    from sagemaker.serializers import JSONSerializer

    session, train = lab
    (tmp_path / "mnist.py").write_text(TRAINING + (HANDLERS if handlers != "none" else ""))
    estimator = MXNet(entry_point="mnist.py", source_dir=str(tmp_path),
                      role="arn:aws:iam::000000000000:role/lab", framework_version="1.9.0",
                      py_version="py38", instance_count=1, instance_type="ml.m5.large",
                      hyperparameters={"epochs": 2}, sagemaker_session=session)
    estimator.fit({"train": train}, logs=True)
    shown = capsys.readouterr().out
    assert " Starting - Preparing the instances for training" in shown
    assert " Completed - Training job completed" in shown and "epoch 1 done" in shown

    endpoint = "lab-" + ("transform" if handlers != "none" else "defaults")
    predictor = estimator.deploy(initial_instance_count=1, instance_type="ml.m5.large",
                                 endpoint_name=endpoint, serializer=JSONSerializer(),
                                 deserializer=JSONDeserializer())
    try:
        images = idx("t10k-images-idx3-ubyte")[:50]
        labels = idx("t10k-labels-idx1-ubyte")[:50]
        if handlers == "none":  # the default handlers: the network's raw outputs, per image
            answer = predictor.predict((images.reshape(-1, 784) / 255).tolist())
            digits = np.argmax(np.array(answer), axis=1)
        else:
            digits = np.array(predictor.predict(images.tolist())["digits"])
        assert digits.shape == (50,) and (digits == labels).mean() >= 0.85
    finally:
        predictor.delete_endpoint()
