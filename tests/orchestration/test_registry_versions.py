"""Model package versions are never reused and a create never overwrites (the registry family
over a real store, no HTTP)."""
import threading

import pytest

from pipeline.local.backend.common import Tags
from pipeline.local.backend.registry import RegistryApi
from pipeline.local.errors import ServiceError
from pipeline.local.events import Outbox
from pipeline.local.resources import ModelPackage
from pipeline.local.store import AlreadyExists, Store

SPEC = {"Containers": [{"Image": "mxnet", "ModelDataUrl": "s3://b/model.tar.gz"}],
        "SupportedContentTypes": ["application/json"],
        "SupportedResponseMIMETypes": ["application/json"]}


def registry_over(path):
    store = Store(str(path))
    outbox = Outbox()
    events = []
    outbox.listen(lambda *event: events.append(event))
    return RegistryApi(store, "us-east-1", Tags(store), outbox), events


@pytest.fixture
def registry(tmp_path):
    api, _ = registry_over(tmp_path / "state.db")
    api.create_model_package_group("g")
    return api


def create(api, description):
    return api.create_model_package(model_package_group_name="g", inference_specification=SPEC,
                                    model_package_description=description)["ModelPackageArn"]


def test_deleting_a_version_never_lets_its_number_be_given_again(registry):
    arns = [create(registry, f"v{i}") for i in (1, 2, 3)]
    assert [a.rsplit("/", 1)[1] for a in arns] == ["1", "2", "3"]
    before = registry.describe_model_package(arns[2])
    registry.delete_model_package(arns[1])
    new = create(registry, "v4")
    assert new.endswith("/g/4")
    assert registry.describe_model_package(arns[2]) == before  # v3 as it was
    assert registry.describe_model_package(arns[0])["ModelPackageDescription"] == "v1"
    with pytest.raises(ServiceError):
        registry.describe_model_package(arns[1])
    registry.delete_model_package(new)  # the newest deleted: still not given again
    assert create(registry, "v5").endswith("/g/5")


def test_concurrent_creates_in_one_group_get_distinct_versions(registry):
    arns, barrier = [], threading.Barrier(8)

    def make(i):
        barrier.wait()
        arns.append(create(registry, f"c{i}"))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(a.rsplit("/", 1)[1]) for a in arns) == list(range(1, 9))
    described = {registry.describe_model_package(a)["ModelPackageDescription"] for a in arns}
    assert described == {f"c{i}" for i in range(8)}


def test_the_counter_survives_a_restart_and_starts_after_an_older_homes_versions(tmp_path):
    api, events = registry_over(tmp_path / "state.db")
    api.create_model_package_group("g")
    create(api, "a")
    create(api, "b")
    assert len(events) == 2 and events[0][1] == "SageMaker Model Package State Change"
    # a home written before versions were counted: packages and no counter
    api.store._db.execute("DELETE FROM counters")
    api.delete_model_package(api.list_model_packages(
        model_package_group_name="g")["ModelPackageSummaryList"][0]["ModelPackageArn"])
    again, _ = registry_over(tmp_path / "state.db")
    assert create(again, "c").endswith("/g/3")


def test_a_create_never_overwrites(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    store.create("thing", "x", {"v": 1})
    with pytest.raises(AlreadyExists):
        store.create("thing", "x", {"v": 2})
    assert store.get("thing", "x") == {"v": 1}
    api = RegistryApi(store, "us-east-1", Tags(store), Outbox())
    api.create_model_package(model_package_name="solo", inference_specification=SPEC)
    with pytest.raises(ServiceError, match="already exists"):
        api.create_model_package(model_package_name="solo", inference_specification=SPEC,
                                 model_package_description="other")
    arn = ModelPackage.arn("us-east-1", "solo")
    assert "ModelPackageDescription" not in api.describe_model_package(arn)
