"""The SageMaker API as AWS documents it: validation, constraints, errors, definitions."""
import json
import os
import re
import urllib.request

import pytest
from botocore.exceptions import ClientError

from localservice import wait_for
from servicehelpers import (ROLE)


def test_requests_are_validated_with_botocores_service_model(service):
    sm = service.client("sagemaker", parameter_validation=False)
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="x", RoleArn=ROLE, PipelineDefinition=123)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "Invalid type for parameter PipelineDefinition" in str(err.value)
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="x", PipelineDefinition="{}")
    assert 'Missing required parameter in input: "RoleArn"' in str(err.value)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as err:  # optional in the API, needed here
        sm.list_pipeline_execution_steps()
    assert "needs the parameter PipelineExecutionArn" in str(err.value)


def test_errors_have_aws_codes_and_messages(service):
    sm = service.client("sagemaker")
    with pytest.raises(ClientError) as err:
        sm.describe_pipeline(PipelineName="missing")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    with pytest.raises(ClientError) as err:
        sm.describe_endpoint(EndpointName="missing")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["Error"]["Message"] == \
        'Could not find endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/missing".'
    for call, message in ((lambda: sm.describe_model(ModelName="Gone"),
                           'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:'
                           'model/gone".'),
                          (lambda: sm.describe_endpoint_config(EndpointConfigName="gone"),
                           'Could not find endpoint configuration "arn:aws:sagemaker:us-east-1:'
                           '000000000000:endpoint-config/gone".')):
        with pytest.raises(ClientError) as err:
            call()
        assert err.value.response["Error"]["Message"] == message
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="bad", RoleArn=ROLE, PipelineDefinition="{not json")
    assert "PipelineDefinition is not JSON" in str(err.value)
    cyclic = {"Version": "2020-12-01", "Steps": [
        {"Name": "A", "Type": "Fail", "DependsOn": ["B"], "Arguments": {}},
        {"Name": "B", "Type": "Fail", "DependsOn": ["A"], "Arguments": {}}]}
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="bad", RoleArn=ROLE,
                           PipelineDefinition=json.dumps(cyclic))
    assert "cycle" in str(err.value)
    runtime = service.client("sagemaker-runtime")
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint(EndpointName="nope", Body=b"[]", ContentType="application/json")
    assert "Endpoint nope of account 000000000000 not found" in str(err.value)


def test_unknown_operation_is_rejected(service):
    request = urllib.request.Request(service.url + "/", data=b"{}", method="POST", headers={
        "X-Amz-Target": "SageMaker.CreateTimeMachine",
        "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request)
    assert err.value.code == 400
    assert json.loads(err.value.read())["__type"] == "UnknownOperationException"


@pytest.mark.parametrize("path, message", [
    ("/packages/no-group/1", "model-package/no-group/1 does not exist"),
    ("/executions/no-pipeline/abc", "no execution abc"),
    ("/jobs", "no page at /jobs"),
    ("/jobs/no-job", "job with name no-job"),
])
def test_run_browser_pages_of_what_does_not_exist_are_404(service, path, message):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(service.url + path)
    assert err.value.code == 404
    assert message in err.value.read().decode()


def test_names_are_checked_against_the_models_constraints_as_aws_does(service):
    """Every member is checked server-side (pattern, length, enum, range) before an operation
    runs, with AWS's message; names that would be paths never reach the disk."""
    sm = service.client("sagemaker")

    def refusal(call, **request):
        with pytest.raises(ClientError) as err:
            call(**request)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return err.value.response["Error"]["Message"]

    variants = [{"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1,
                 "InstanceType": "ml.m5.large"}]
    assert refusal(sm.create_endpoint_config, EndpointConfigName="../../../escaped",
                   ProductionVariants=variants) == (
        "1 validation error detected: Value '../../../escaped' at 'endpointConfigName' failed "
        "to satisfy constraint: Member must satisfy regular expression pattern: "
        "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
    assert refusal(sm.create_endpoint, EndpointName="/some/dir", EndpointConfigName="c").startswith(
        "1 validation error detected: Value '/some/dir' at 'endpointName' failed")
    message = refusal(sm.create_pipeline, PipelineName="a/../b", RoleArn=ROLE,
                      PipelineDefinition="{}")
    assert "at 'pipelineName' failed to satisfy constraint" in message
    message = refusal(sm.describe_endpoint, EndpointName="e" * 63)  # at the limit: allowed
    assert message == f'Could not find endpoint "arn:aws:sagemaker:us-east-1:000000000000:' \
        f'endpoint/{"e" * 63}".'
    message = refusal(sm.describe_endpoint, EndpointName="e" * 64)  # too long for both rules
    assert message.startswith("2 validation errors detected: ")
    assert "Member must have length less than or equal to 63; " in message
    message = refusal(sm.list_pipelines, SortOrder="Sideways", MaxResults=101)
    assert message.startswith("2 validation errors detected: ")
    assert "Member must satisfy enum value set: [Ascending, Descending]" in message
    assert "at 'maxResults' failed to satisfy constraint: Member must have value less than or " \
        "equal to 100" in message
    bad_variant = [dict(variants[0], VariantName="no spaces allowed")]
    assert "at 'productionVariants.1.member.variantName' failed" in refusal(
        sm.create_endpoint_config, EndpointConfigName="ok", ProductionVariants=bad_variant)
    names = os.listdir(os.path.dirname(service.home))
    assert not any("escaped" in n or n == "dir" for n in names)


def test_paths_from_names_are_confined_to_the_home_whatever_the_api_lets_through(tmp_path):
    """The second line of defence: a path built from any name stays strictly inside the home."""
    from pipeline.local.home import ServiceHome

    home = ServiceHome(str(tmp_path / "home"))
    for bad in ("../../escaped", "..", ".", "", "a/b", "x\0y"):
        with pytest.raises(ValueError, match="cannot be used as a file name"):
            home.model_dir("endpoint", bad)
    for bad in ("../../escaped", "a/b", "x\0y"):
        with pytest.raises(ValueError, match="cannot be used as a file name"):
            home.job_log(bad)
    os.makedirs(tmp_path / "home" / "endpoints", exist_ok=True)
    os.symlink(tmp_path, tmp_path / "home" / "endpoints" / "link")  # a link out of the home
    with pytest.raises(ValueError, match="leaves the service's home"):
        home.model_dir("link", "config")
    assert home.model_dir("e", "c") == str(tmp_path / "home" / "endpoints" / "e" / "c")
    assert sorted(os.listdir(tmp_path)) == ["home"]


def test_experiment_config_is_accepted_and_returned_resolved(service):
    sm = service.client("sagemaker")
    sm.create_pipeline(PipelineName="with-experiments", RoleArn=ROLE,
                       PipelineDefinition=json.dumps({
                           "Version": "2020-12-01",
                           "PipelineExperimentConfig": {
                               "ExperimentName": {"Get": "Execution.PipelineName"},
                               "TrialName": {"Get": "Execution.PipelineExecutionId"}},
                           "Steps": [{"Name": "Gate", "Type": "Condition",
                                      "Arguments": {"Conditions": []}}]}))
    arn = sm.start_pipeline_execution(PipelineName="with-experiments")["PipelineExecutionArn"]
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)[
        "PipelineExperimentConfig"] == {"ExperimentName": "with-experiments",
                                        "TrialName": arn.split("/")[-1]}


def test_bad_definitions_and_tokens_are_refused_up_front_with_a_400(service):
    sm = service.client("sagemaker")

    def refused(definition):
        with pytest.raises(ClientError) as err:
            sm.create_pipeline(PipelineName="refused", RoleArn=ROLE,
                               PipelineDefinition=definition if isinstance(definition, str)
                               else json.dumps(definition))
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return err.value.response["Error"]["Message"]

    gate = {"Name": "Gate", "Type": "Condition", "Arguments": {"Conditions": []}}
    assert "cannot take the value 'abc'" in refused({"Version": "2020-12-01", "Parameters": [
        {"Name": "Epochs", "Type": "Integer", "DefaultValue": "abc"}], "Steps": [gate]})
    assert "condition of unknown type 'Sometimes'" in refused({"Steps": [dict(
        gate, Arguments={"Conditions": [{"Type": "Sometimes"}]})]})
    assert "Training step 'Train' lacks AlgorithmSpecification" in refused({"Steps": [
        {"Name": "Train", "Type": "Training"}]})
    assert "nested too deeply" in refused('{"Steps": ' + "[" * 50000 + "]" * 50000 + "}")
    big = json.dumps({"Steps": [gate], "Metadata": {"pad": "x" * 1048576}})
    assert "Member must have length less than or equal to 1048576" in refused(big)
    assert sm.list_pipelines(PipelineNamePrefix="refused")["PipelineSummaries"] == []
    with pytest.raises(ClientError) as err:
        sm.list_pipelines(NextToken="abc")
    assert err.value.response["Error"] == {"Code": "ValidationException",
                                           "Message": "Invalid pagination token"}


def test_a_huge_definition_is_checked_while_other_calls_go_on(service):
    """8,000 steps in a chain are accepted, and list calls made meanwhile are answered (the
    check runs outside the backend's lock; its speed is in bench/definition_check.py)."""
    import threading

    sm = service.client("sagemaker")
    steps = [{"Name": f"S{i}", "Type": "Fail", "Arguments": {"ErrorMessage": "x"},
              **({"DependsOn": [f"S{i - 1}"]} if i else {})} for i in range(8000)]
    answered, done = [], threading.Event()

    def other_calls():
        client = service.client("sagemaker")
        while not done.is_set():
            answered.append(client.list_endpoints()["Endpoints"] is not None)

    thread = threading.Thread(target=other_calls)
    thread.start()
    sm.create_pipeline(PipelineName="eight-thousand", RoleArn=ROLE,
                       PipelineDefinition=json.dumps({"Version": "2020-12-01", "Steps": steps}))
    done.set()
    thread.join()
    assert answered and all(answered)
    assert sm.describe_pipeline(PipelineName="eight-thousand")["PipelineName"] == "eight-thousand"


def test_every_response_has_its_own_request_id(service):
    sm = service.client("sagemaker")
    ids = {sm.list_pipelines()["ResponseMetadata"]["RequestId"] for _ in range(5)}
    with pytest.raises(ClientError) as err:
        sm.describe_pipeline(PipelineName="no-such-pipeline")
    ids.add(err.value.response["ResponseMetadata"]["RequestId"])
    assert len(ids) == 6 and all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)


def test_errors_as_aws_gives_them(service):
    sm = service.client("sagemaker")

    def error_of(call, **request):
        with pytest.raises(ClientError) as err:
            call(**request)
        return err.value.response["Error"]

    assert error_of(sm.describe_training_job, TrainingJobName="nope") == {
        "Code": "ValidationException", "Message": "Requested resource not found."}
    assert error_of(sm.describe_processing_job, ProcessingJobName="nope") == {
        "Code": "ValidationException", "Message": "Could not find requested job with name nope"}
    spec = {"Containers": [{"Image": "img"}], "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"]}
    assert error_of(sm.create_model_package, ModelPackageGroupName="never-created",
                    InferenceSpecification=spec)["Message"] == \
        "Model Package Group never-created does not exist."
    assert sm.list_model_package_groups(NameContains="never-created")[
        "ModelPackageGroupSummaryList"] == []  # not created on the way
    sm.create_model_package_group(ModelPackageGroupName="errors-group")
    assert "cannot have it" in error_of(
        sm.create_model_package, ModelPackageGroupName="errors-group",
        ModelPackageName="named", InferenceSpecification=spec)["Message"]
    arn = sm.describe_model_package_group(ModelPackageGroupName="errors-group")[
        "ModelPackageGroupArn"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(45)])
    assert "at most 50 tags" in error_of(sm.add_tags, ResourceArn=arn, Tags=[
        {"Key": f"more{i}", "Value": "v"} for i in range(6)])["Message"]
    assert len(sm.list_tags(ResourceArn=arn)["Tags"]) == 45
    assert "Member must have length less than or equal to 50" in error_of(
        sm.add_tags, ResourceArn=arn, Tags=[{"Key": f"x{i}", "Value": "v"} for i in range(51)])[
        "Message"]


def test_unset_optional_members_are_omitted(service):
    sm = service.client("sagemaker")
    sm.create_pipeline(PipelineName="plain", RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": [{"Name": "Gate", "Type": "Condition",
                                              "Arguments": {"Conditions": []}}]}))
    assert "PipelineDescription" not in sm.describe_pipeline(PipelineName="plain")
    arn = sm.start_pipeline_execution(PipelineName="plain")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=30) == "Succeeded"
    desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert "PipelineExecutionDescription" not in desc and "FailureReason" not in desc
    (step,) = sm.list_pipeline_execution_steps(PipelineExecutionArn=arn)[
        "PipelineExecutionSteps"]
    assert "StepDescription" not in step and "FailureReason" not in step
    sm.create_model_package_group(ModelPackageGroupName="plain-group")
    assert "ModelPackageGroupDescription" not in sm.describe_model_package_group(
        ModelPackageGroupName="plain-group")


def test_a_pipeline_definition_can_come_from_s3(service):
    """PipelineDefinitionS3Location, as the SDK sends definitions too large for the request."""
    sm = service.client("sagemaker")
    s3 = service.client("s3", s3={"addressing_style": "path"})
    s3.create_bucket(Bucket="definitions")
    first = {"Version": "2020-12-01", "Steps": [{"Name": "Gate", "Type": "Condition",
                                                 "Arguments": {"Conditions": []}}]}
    second = {**first, "Parameters": [{"Name": "Epochs", "Type": "Integer", "DefaultValue": 3}]}
    s3.put_object(Bucket="definitions", Key="p/one.json", Body=json.dumps(first).encode())
    s3.put_object(Bucket="definitions", Key="p/two.json", Body=json.dumps(second).encode())
    sm.create_pipeline(PipelineName="from-s3", RoleArn=ROLE, PipelineDefinitionS3Location={
        "Bucket": "definitions", "ObjectKey": "p/one.json"})
    assert json.loads(sm.describe_pipeline(PipelineName="from-s3")["PipelineDefinition"]) == first
    sm.update_pipeline(PipelineName="from-s3", PipelineDefinitionS3Location={
        "Bucket": "definitions", "ObjectKey": "p/two.json"})
    assert json.loads(sm.describe_pipeline(PipelineName="from-s3")["PipelineDefinition"]) == \
        second
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="from-nowhere", RoleArn=ROLE,
                           PipelineDefinitionS3Location={"Bucket": "definitions",
                                                         "ObjectKey": "p/missing.json"})
    assert "s3://definitions/p/missing.json does not exist" in str(err.value)
    with pytest.raises(ClientError) as err:
        sm.create_pipeline(PipelineName="from-both", RoleArn=ROLE,
                           PipelineDefinition=json.dumps(first), PipelineDefinitionS3Location={
                               "Bucket": "definitions", "ObjectKey": "p/one.json"})
    assert "not both" in str(err.value)


@pytest.mark.parametrize("build", [
    lambda home, bad: home.job_log(bad), lambda home, bad: home.job_dir(bad),
    lambda home, bad: home.endpoint_log(bad, "config"),
    lambda home, bad: home.endpoint_log("endpoint", bad),
    lambda home, bad: home.model_dir(bad, "config"), lambda home, bad: home.model_dir("e", bad),
])
def test_each_kind_of_name_derived_path_is_confined_on_its_own(tmp_path, build):
    from pipeline.local.home import ServiceHome

    home = ServiceHome(str(tmp_path / "home"))
    for bad in ("../../escaped", "a/b", "x\0y"):
        with pytest.raises(ValueError):
            build(home, bad)
    assert build(home, "fine").startswith(str(tmp_path / "home") + os.sep)


def test_map_keys_are_checked_against_their_constraints():
    from pipeline.local import constraints
    from pipeline.local.errors import ServiceError
    from pipeline.local.resources import SERVICE_MODEL

    shape = SERVICE_MODEL.operation_model("UpdateModelPackage").input_shape
    request = {"ModelPackageArn": "arn:aws:sagemaker:us-east-1:000000000000:model-package/g/1",
               "CustomerMetadataProperties": {"bad|key": "v"}}
    with pytest.raises(ServiceError) as err:
        constraints.check(request, shape)
    assert "customerMetadataProperties.key" in err.value.message
    request["CustomerMetadataProperties"] = {"good.key": "v"}
    constraints.check(request, shape)


def test_log_events_read_from_the_tail_and_page_backward(tmp_path):
    """GetLogEvents as CloudWatch pages it: without startFromHead the last page; a backward
    token gives the page before; a forward token the rest; foreign tokens refused."""
    from pipeline.local.errors import ServiceError
    from pipeline.local.home import ServiceHome
    from pipeline.local.logs import LogsBackend
    from pipeline.local.resources import TrainingJob
    from pipeline.local.store import Store

    home = ServiceHome(str(tmp_path / "home"))
    os.makedirs(home.logs_dir)
    store = Store(home.state_db)
    store.put(TrainingJob.kind, "job", {"TrainingJobName": "job", "CreationTime": 1000.0})
    with open(home.job_log("job"), "w") as handle:
        handle.write("".join(f"line {i}\n" for i in range(25)))
    logs = LogsBackend(store, home, "us-east-1")
    group, stream = "/aws/sagemaker/TrainingJobs", "job/algo-1-1000"

    def read(**query):
        page = logs.get_log_events(log_group_name=group, log_stream_name=stream, limit=10,
                                   **query)
        return [e["message"] for e in page["events"]], page

    tail, page = read()
    assert tail == [f"line {i}" for i in range(15, 25)]  # from the tail
    before, page = read(next_token=page["nextBackwardToken"])
    assert before == [f"line {i}" for i in range(5, 15)]
    first, page = read(next_token=page["nextBackwardToken"])
    assert first == [f"line {i}" for i in range(0, 5)]  # no line twice
    head, page = read(start_from_head=True)
    assert head == [f"line {i}" for i in range(10)]
    rest, _ = read(next_token=page["nextForwardToken"])
    assert rest == [f"line {i}" for i in range(10, 20)]
    for token in ("b/²", "x/1", "f/"):
        with pytest.raises(ServiceError):
            read(next_token=token)
