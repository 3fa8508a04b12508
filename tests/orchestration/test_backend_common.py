"""What every API family shares: tags (AWS's 50 per resource), create-only records, deletes."""
import pytest

from pipeline.local.backend.common import MAX_TAGS, Family, Tags
from pipeline.local.errors import ServiceError, validation
from pipeline.local.resources import Model
from pipeline.local.store import Store


@pytest.fixture
def family(tmp_path):
    store = Store(str(tmp_path / "state.db"))
    return Family(store, "us-east-1", Tags(store))


def test_a_resource_takes_up_to_50_tags_and_not_one_more(family):
    family.tags.add("arn:x", [{"Key": f"k{i}", "Value": "v"} for i in range(MAX_TAGS - 1)])
    family.tags.add("arn:x", [{"Key": "last", "Value": "v"}])
    assert len(family.tags.of("arn:x")) == MAX_TAGS == 50
    with pytest.raises(ServiceError, match="at most 50 tags; this request would give arn:x 51"):
        family.tags.add("arn:x", [{"Key": "one-more", "Value": "v"}])
    family.tags.add("arn:x", [{"Key": "k0", "Value": "changed"}])  # a key again: no more tags
    assert {"Key": "k0", "Value": "changed"} in family.tags.of("arn:x")


def test_create_refuses_a_taken_name_and_delete_an_unknown_one(family):
    doc = {"ModelName": "m", "ModelArn": Model.arn("us-east-1", "m")}
    family._create(Model, "m", doc, validation("taken"), [{"Key": "k", "Value": "v"}])
    with pytest.raises(ServiceError, match="taken"):
        family._create(Model, "m", dict(doc, Extra=1), validation("taken"))
    assert family._get(Model, "m") == doc
    assert family._delete(Model, "m") == doc
    with pytest.raises(ServiceError, match="Could not find model"):
        family._delete(Model, "m")
