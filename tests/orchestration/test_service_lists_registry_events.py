"""Lists (filters, sort, pages), the model registry, and the EventBridge subset."""
import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from servicehelpers import (BUCKET, ROLE)


def test_endpoint_configs_describe_back_what_they_were_created_with(service):
    sm = service.client("sagemaker")
    sm.create_model(ModelName="described", ExecutionRoleArn=ROLE, PrimaryContainer={
        "Image": "img", "ModelDataUrl": f"s3://{BUCKET}/nothing/model.tar.gz"})
    capture = {"EnableCapture": True, "InitialSamplingPercentage": 50,
               "DestinationS3Uri": "s3://capture/here",
               "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}
    sm.create_endpoint_config(
        EndpointConfigName="described", KmsKeyId="alias/mine", DataCaptureConfig=capture,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": "described",
                             "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}])
    desc = sm.describe_endpoint_config(EndpointConfigName="described")
    assert desc["KmsKeyId"] == "alias/mine" and desc["DataCaptureConfig"] == capture


def test_lists_sort_page_and_filter_as_each_operation_documents(local_service, tmp_path):
    _, sm, _ = local_service(tmp_path / "home")  # its own: every count below is exact
    sm.create_model_package_group(ModelPackageGroupName="ordered")
    container = {"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"}
    spec = {"Containers": [container], "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    for _ in range(3):
        sm.create_model_package(ModelPackageGroupName="ordered", InferenceSpecification=spec)
    versions = [p["ModelPackageVersion"] for p in sm.list_model_packages(
        ModelPackageGroupName="ordered")["ModelPackageSummaryList"]]
    assert versions == [1, 2, 3]  # ListModelPackages: "The default is Ascending."
    assert [p["ModelPackageVersion"] for p in sm.list_model_packages(
        ModelPackageGroupName="ordered", SortOrder="Descending")[
        "ModelPackageSummaryList"]] == [3, 2, 1]
    assert sm.list_model_packages(ModelPackageGroupName="ordered",
                                  ModelPackageType="Unversioned")["ModelPackageSummaryList"] == []

    sm.create_model(ModelName="paged", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(EndpointConfigName="paged", ProductionVariants=[{
        "VariantName": "AllTraffic", "ModelName": "paged", "InitialInstanceCount": 1,
        "InstanceType": "ml.m5.large"}])
    for n in range(12):  # their model data does not exist: they end Failed
        sm.create_endpoint(EndpointName=f"paged-{n}", EndpointConfigName="paged")
    page = sm.list_endpoints(NameContains="paged")
    assert len(page["Endpoints"]) == 10 and "NextToken" in page  # "defaults to 10"
    rest = sm.list_endpoints(NameContains="paged", NextToken=page["NextToken"])["Endpoints"]
    names = [e["EndpointName"] for e in page["Endpoints"] + rest]
    assert len(names) == len(set(names)) == 12
    created = [e["CreationTime"] for e in page["Endpoints"]]
    assert created == sorted(created, reverse=True)  # ListEndpoints: Descending by default
    middle = page["Endpoints"][5]["CreationTime"]
    newer = sm.list_endpoints(NameContains="paged", CreationTimeAfter=middle,
                              MaxResults=100)["Endpoints"]
    assert {e["EndpointName"] for e in newer} == {e["EndpointName"]
                                                   for e in page["Endpoints"][:5]}

    for name in ("first", "second", "third"):
        sm.create_pipeline(PipelineName=name, RoleArn=ROLE, PipelineDefinition=json.dumps(
            {"Version": "2020-12-01", "Steps": []}))
        time.sleep(0.01)  # creation times a few milliseconds apart
    pipelines = sm.list_pipelines(MaxResults=100)["PipelineSummaries"]
    oldest = min(p["CreationTime"] for p in pipelines)
    assert sm.list_pipelines(CreatedBefore=oldest)["PipelineSummaries"] == []
    assert [p["PipelineName"] for p in sm.list_pipelines(CreatedAfter=oldest, MaxResults=100)[
        "PipelineSummaries"]] == ["third", "second"]
    assert sm.list_training_jobs(WarmPoolStatusEquals="Available")["TrainingJobSummaries"] == []


def test_model_package_updates_merge_metadata_and_add_inference_specifications(service):
    sm = service.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="updated")
    assert sm.describe_model_package_group(ModelPackageGroupName="updated")["CreatedBy"] == {}
    container = {"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"}
    spec = {"Containers": [container], "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    arn = sm.create_model_package(ModelPackageGroupName="updated", InferenceSpecification=spec,
                                  CustomerMetadataProperties={"a": "1", "b": "2"})[
        "ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, CustomerMetadataProperties={"c": "3"},
                            CustomerMetadataPropertiesToRemove=["a"],
                            AdditionalInferenceSpecificationsToAdd=[
                                {"Name": "compiled", "Containers": [container]}])
    desc = sm.describe_model_package(ModelPackageName=arn)
    assert desc["CustomerMetadataProperties"] == {"b": "2", "c": "3"}
    assert [s["Name"] for s in desc["AdditionalInferenceSpecifications"]] == ["compiled"]
    sm.update_model_package(ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[
        {"Name": f"more-{n}", "Containers": [container]} for n in range(14)])  # 15: the limit
    with pytest.raises(ClientError) as err:
        sm.update_model_package(ModelPackageArn=arn, AdditionalInferenceSpecificationsToAdd=[
            {"Name": "one-more", "Containers": [container]}])
    assert "can not exceed 15 (this would make 16)" in err.value.response["Error"]["Message"]


def test_a_list_filter_the_service_cannot_apply_is_refused_not_ignored(service):
    sm = service.client("sagemaker")
    sm.create_pipeline(PipelineName="aliased", RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": [{"Name": "Gate", "Type": "Condition",
                                              "Arguments": {"Conditions": []}}]}))
    with pytest.raises(ClientError) as err:
        sm.list_pipeline_executions(PipelineName="aliased", PipelineVersionAlias="x")
    assert "pipeline_version_alias is not supported by the local service's " \
        "ListPipelineExecutions" in err.value.response["Error"]["Message"]


def test_unversioned_model_packages(service):
    """CreateModelPackage with a ModelPackageName and no group: described by name, listed by
    default (AWS's default ModelPackageType is Unversioned) and not among a group's versions;
    approval does not apply; the run browser shows it."""
    sm = service.client("sagemaker")
    spec = {"Containers": [{"Image": "img", "ModelDataUrl": f"s3://{BUCKET}/m/model.tar.gz"}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    arn = sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=spec,
                                  ModelPackageDescription="not in a group")["ModelPackageArn"]
    assert arn.endswith(":model-package/standalone")
    desc = sm.describe_model_package(ModelPackageName="standalone")
    assert desc["ModelPackageArn"] == arn and "ModelApprovalStatus" not in desc
    assert "ModelPackageGroupName" not in desc and "ModelPackageVersion" not in desc
    listed = [p["ModelPackageArn"] for p in sm.list_model_packages()["ModelPackageSummaryList"]]
    assert arn in listed
    assert all(":model-package/standalone" in a or a.count("/") == 1 for a in listed)
    assert arn not in [p["ModelPackageArn"] for p in sm.list_model_packages(
        ModelPackageType="Versioned")["ModelPackageSummaryList"]]
    with pytest.raises(ClientError) as err:
        sm.create_model_package(ModelPackageName="standalone", InferenceSpecification=spec)
    assert "already exists" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    assert "does not apply to unversioned" in err.value.response["Error"]["Message"]
    with urllib.request.urlopen(service.url + "/packages/standalone") as page:
        html = page.read().decode()
    assert "Model package standalone" in html and "not in a group" in html
    assert 'id="approve"' not in html
    with urllib.request.urlopen(service.url + "/packages") as page:
        assert "/packages/standalone" in page.read().decode()
    sm.delete_model_package(ModelPackageName="standalone")
    with pytest.raises(ClientError):
        sm.describe_model_package(ModelPackageName="standalone")


def test_eventbridge_rules_start_pipelines_on_package_state_changes(service):
    """The EventBridge subset, through boto3's events client: a rule on Approved packages of a
    group starts its pipeline target with the target's parameters; other changes do not."""
    sm, events = service.client("sagemaker"), service.client("events")
    sm.create_pipeline(PipelineName="on-approval", RoleArn=ROLE, PipelineDefinition=json.dumps({
        "Version": "2020-12-01", "Parameters": [{"Name": "Why", "Type": "String",
                                                 "DefaultValue": "by hand"}],
        "Steps": [{"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": []}}]}))
    pattern = {"source": ["aws.sagemaker"],
               "detail-type": ["SageMaker Model Package State Change"],
               "detail": {"ModelPackageGroupName": ["events-group"],
                          "ModelApprovalStatus": ["Approved"]}}
    arn = events.put_rule(Name="approved", EventPattern=json.dumps(pattern))["RuleArn"]
    assert arn == "arn:aws:events:us-east-1:000000000000:rule/approved"
    pipeline_arn = sm.describe_pipeline(PipelineName="on-approval")["PipelineArn"]
    assert events.put_targets(Rule="approved", Targets=[{
        "Id": "t", "Arn": pipeline_arn, "RoleArn": ROLE, "SageMakerPipelineParameters": {
            "PipelineParameterList": [{"Name": "Why", "Value": "approved"}]}}])[
        "FailedEntryCount"] == 0
    refused = events.put_targets(Rule="approved", Targets=[
        {"Id": "q", "Arn": "arn:aws:sqs:us-east-1:000000000000:queue"}])
    assert refused["FailedEntryCount"] == 1
    assert [t["Id"] for t in events.list_targets_by_rule(Rule="approved")["Targets"]] == ["t"]
    with pytest.raises(ClientError) as err:
        events.put_rule(Name="bad", EventPattern='{"source": "aws.sagemaker"}')
    assert err.value.response["Error"]["Code"] == "InvalidEventPatternException"

    def runs():
        return sm.list_pipeline_executions(PipelineName="on-approval")[
            "PipelineExecutionSummaries"]

    sm.create_model_package_group(ModelPackageGroupName="events-group")
    package = sm.create_model_package(
        ModelPackageGroupName="events-group", ModelApprovalStatus="PendingManualApproval",
        InferenceSpecification={"Containers": [{"Image": "img"}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["application/json"]})[
        "ModelPackageArn"]
    assert runs() == []  # created pending: the pattern wants Approved
    sm.update_model_package(ModelPackageArn=package, ApprovalDescription="no status change")
    assert runs() == []
    sm.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    (started,) = runs()
    assert started["PipelineExecutionDescription"] == "started by an EventBridge rule"
    params = sm.list_pipeline_parameters_for_execution(
        PipelineExecutionArn=started["PipelineExecutionArn"])["PipelineParameters"]
    assert params == [{"Name": "Why", "Value": "approved"}]
    events.disable_rule(Name="approved")
    sm.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Rejected")
    sm.update_model_package(ModelPackageArn=package, ModelApprovalStatus="Approved")
    assert len(runs()) == 1  # a disabled rule starts nothing
    with pytest.raises(ClientError) as err:
        events.delete_rule(Name="approved")
    assert "has targets" in err.value.response["Error"]["Message"]
    events.remove_targets(Rule="approved", Ids=["t"])
    events.delete_rule(Name="approved")
    with pytest.raises(ClientError) as err:
        events.describe_rule(Name="approved")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_event_patterns_match_as_eventbridge_documents():
    from pipeline.local.patterns import matches

    event = {"source": "aws.sagemaker", "resources": ["arn:a", "arn:b"],
             "detail": {"ModelPackageGroupName": "group-1", "ModelApprovalStatus": "Approved"}}
    assert matches({"source": ["aws.sagemaker", "aws.s3"]}, event)
    assert matches({"resources": ["arn:b"]}, event)  # any item of a list-valued field
    assert matches({"detail": {"ModelPackageGroupName": [{"prefix": "group"}]}}, event)
    assert not matches({"detail": {"ModelPackageGroupName": [{"prefix": "group-1x"}]}}, event)
    assert not matches({"detail": {"ModelPackageGroupName": [{"prefix": "roup"}]}}, event)
    assert matches({"detail": {"ApprovalDescription": [{"exists": False}]}}, event)
    assert not matches({"detail": {"ModelApprovalStatus": ["Rejected"]}}, event)
    assert not matches({"detail": {"Missing": ["x"]}}, event)
    assert not matches({"detail": {"ModelApprovalStatus": [{"exists": False}]}}, event)


@pytest.mark.parametrize("pattern, kind", [
    ('{"source": "aws.sagemaker"}', "InvalidPattern"),  # a leaf that is not an array
    ('{"source": [{"prefix": 5}]}', "InvalidPattern"),
    ('{"source": []}', "InvalidPattern"),
    ('{"source": [["a"]]}', "InvalidPattern"),
    ('{"source": [{"exists": "yes"}]}', "InvalidPattern"),
    ('{"source": [{"numeric": 5}]}', "InvalidPattern"),
    ('{"source": [{"anything-but": {"numeric": [">", 1]}}]}', "InvalidPattern"),
    ('{"source": [{"nope": 1}]}', "InvalidPattern"),
    ("[" * 2000 + "]" * 2000, "InvalidPattern"),
    ('{"a": ' * 40 + '["x"]' + "}" * 40, "InvalidPattern"),
    ("{}", "InvalidPattern"),
    ('{"source": [{"suffix": ".x"}]}', "UnsupportedPattern"),
    ('{"source": [{"numeric": [">", 1]}]}', "UnsupportedPattern"),
    ('{"source": [{"anything-but": "x"}]}', "UnsupportedPattern"),
])
def test_patterns_eventbridge_refuses_are_refused(pattern, kind):
    from pipeline.local import patterns

    with pytest.raises(getattr(patterns, kind)):
        patterns.parse(pattern)


def test_a_bad_pattern_or_a_failing_target_never_fails_the_registry_write(service):
    """PutRule refuses what EventBridge refuses; and a fault in delivering an event never turns
    the committed registry write that caused it into an error (or a second write)."""
    sm, events = service.client("sagemaker"), service.client("events")
    with pytest.raises(ClientError) as err:
        events.put_rule(Name="bad", EventPattern='{"source": [{"prefix": 5}]}')
    assert err.value.response["Error"]["Code"] == "InvalidEventPatternException"
    with pytest.raises(ClientError) as err:
        events.put_rule(Name="bad", EventPattern='{"source": [{"suffix": "x"}]}')
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "not matched by the local service" in err.value.response["Error"]["Message"]
    events.put_rule(Name="to-nowhere", EventPattern=json.dumps({"source": ["aws.sagemaker"]}))
    events.put_targets(Rule="to-nowhere", Targets=[{
        "Id": "t", "Arn": "arn:aws:sagemaker:us-east-1:000000000000:pipeline/no-such-pipeline",
        "RoleArn": "arn:aws:iam::000000000000:role/r"}])
    sm.create_model_package_group(ModelPackageGroupName="faults")
    arn = sm.create_model_package(ModelPackageGroupName="faults", InferenceSpecification={
        "Containers": [{"Image": "img"}], "SupportedContentTypes": ["application/json"],
        "SupportedResponseMIMETypes": ["application/json"]})["ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Approved")
    listed = sm.list_model_packages(ModelPackageGroupName="faults")["ModelPackageSummaryList"]
    assert [p["ModelPackageArn"] for p in listed] == [arn]
    events.remove_targets(Rule="to-nowhere", Ids=["t"])
    events.delete_rule(Name="to-nowhere")


def test_a_fault_in_delivery_is_logged_and_the_write_stands(local_service, tmp_path, capsys):
    """A rule kept from before patterns were checked, and a target whose start raises: each
    create and update answers once, 200, with one package and its status committed."""
    from pipeline.local.events import RULE_KIND

    service, sm, _ = local_service(tmp_path / "faults")
    service.store.put(RULE_KIND, "old", {"Name": "old", "EventPattern": '{"source": "x"}',
                                        "State": "ENABLED", "Targets": [], "Arn": "a"})
    sm.create_pipeline(PipelineName="p", RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": []}))
    service.store.put(RULE_KIND, "boom", {
        "Name": "boom", "EventPattern": '{"source": ["aws.sagemaker"]}', "State": "ENABLED",
        "Arn": "b", "Targets": [{"Id": "t", "Arn": "arn:aws:sagemaker:us-east-1:000000000000:"
                                                   "pipeline/p"}]})

    def broken(*args, **kwargs):
        raise RuntimeError("delivery broke")

    service.events.start_pipeline = broken
    sm.create_model_package_group(ModelPackageGroupName="g")
    arn = sm.create_model_package(ModelPackageGroupName="g", ModelApprovalStatus="Approved",
                                  InferenceSpecification={
                                      "Containers": [{"Image": "img"}],
                                      "SupportedContentTypes": ["application/json"],
                                      "SupportedResponseMIMETypes": ["application/json"]})[
        "ModelPackageArn"]
    sm.update_model_package(ModelPackageArn=arn, ModelApprovalStatus="Rejected")
    assert [p["ModelApprovalStatus"] for p in sm.list_model_packages(
        ModelPackageGroupName="g")["ModelPackageSummaryList"]] == ["Rejected"]
    out = capsys.readouterr().out
    assert "rule old: pattern not usable" in out and "delivery broke" in out
