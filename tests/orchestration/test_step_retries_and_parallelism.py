"""Steps' RetryPolicies and ParallelismConfiguration, through boto3 against the local service.

Faults a retry policy matches cannot be asked for through the API, so the tests that need one
inject it into the service's own staging or store (as a full disk or a lack of process slots
would raise it) and watch the outcome through the API only."""
import errno
import json
import os
import sqlite3

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from localservice import steps_of, wait_for
from pipeline.local.server import LocalSageMaker
from pipeline.local.workflow.retry import RetryState

ROLE = "arn:aws:iam::000000000000:role/r"
BUCKET = "scripts"


@pytest.fixture
def local(tmp_path):
    service = LocalSageMaker(str(tmp_path / "home")).start_background()
    session = dict(endpoint_url=service.url, region_name="us-east-1",
                   aws_access_key_id="local", aws_secret_access_key="local",
                   config=Config(retries={"max_attempts": 1}))
    sm = boto3.client("sagemaker", **session)
    s3 = boto3.client("s3", **dict(session, config=Config(s3={"addressing_style": "path"})))
    s3.create_bucket(Bucket=BUCKET)
    yield service, sm, s3
    service.close()


def _script_step(s3, name, code, retry_policies=None, depends_on=None):
    """A Processing step running ``code`` (a Python script) in the job environment."""
    s3.put_object(Bucket=BUCKET, Key=f"{name}/run.py", Body=code.encode())
    step = {"Name": name, "Type": "Processing", "Arguments": {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "VolumeSizeInGB": 30,
                                                  "InstanceType": "ml.m5.large"}},
        "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": [
            "python3", "/opt/ml/processing/input/code/run.py"]},
        "RoleArn": ROLE, "ProcessingInputs": [{
            "InputName": "code", "AppManaged": False, "S3Input": {
                "S3Uri": f"s3://{BUCKET}/{name}", "LocalPath": "/opt/ml/processing/input/code",
                "S3DataType": "S3Prefix", "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated"}}]}}
    if retry_policies is not None:
        step["RetryPolicies"] = retry_policies
    if depends_on:
        step["DependsOn"] = depends_on
    return step


def _create(sm, name, steps, **extra):
    sm.create_pipeline(PipelineName=name, RoleArn=ROLE, PipelineDefinition=json.dumps(
        {"Version": "2020-12-01", "Steps": steps}), **extra)


def _faults(service, errors):
    """The next staging downloads fail with these errno values, then staging works again."""
    real = service.s3.download
    pending = list(errors)

    def download(uri, local_dir):
        if pending:
            code = pending.pop(0)
            raise OSError(code, os.strerror(code))
        return real(uri, local_dir)

    service.s3.download = download
    return pending


def _jobs(sm, arn_prefix):
    jobs = sm.list_processing_jobs(NameContains=arn_prefix, SortBy="CreationTime",
                                   SortOrder="Ascending", MaxResults=100)
    return [sm.describe_processing_job(ProcessingJobName=j["ProcessingJobName"])
            for j in jobs["ProcessingJobSummaries"]]


def test_a_step_is_retried_after_a_service_fault_with_backoff_then_succeeds(local):
    service, sm, s3 = local
    policy = {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 1,
              "BackoffRate": 2.0, "MaxAttempts": 2}
    _create(sm, "flaky", [_script_step(s3, "Flaky", "print('ran')\n", [policy])])
    left = _faults(service, [errno.ENOSPC, errno.ENOSPC])
    arn = sm.start_pipeline_execution(PipelineName="flaky")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Succeeded"
    assert left == []
    step = steps_of(sm, arn)["Flaky"]
    assert step["StepStatus"] == "Succeeded" and step["AttemptCount"] == 3
    jobs = _jobs(sm, arn.split("/")[-1])
    assert [j["ProcessingJobStatus"] for j in jobs] == ["Failed", "Failed", "Completed"]
    assert [j["ProcessingJobName"][-2:] for j in jobs][1:] == ["-2", "-3"]
    for failed in jobs[:2]:
        assert failed["FailureReason"].startswith("InternalServerError: ")
        assert "No space left on device" in failed["FailureReason"]
    # the step names the job of its last attempt
    assert step["Metadata"]["ProcessingJob"]["Arn"] == jobs[2]["ProcessingJobArn"]
    # 1 s before the first retry, 2 s (1 x 2.0) before the second
    gaps = [(b["CreationTime"] - a["CreationTime"]).total_seconds()
            for a, b in zip(jobs, jobs[1:])]
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, gaps


def test_each_policy_counts_its_own_retries_and_the_last_failure_is_reported(local):
    service, sm, s3 = local
    policies = [{"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0,
                 "MaxAttempts": 1},
                {"ExceptionType": ["SageMaker.CAPACITY_ERROR"], "IntervalSeconds": 0,
                 "MaxAttempts": 1}]
    _create(sm, "exhausted", [_script_step(s3, "Flaky", "print('ran')\n", policies)])
    _faults(service, [errno.ENOSPC, errno.EAGAIN, errno.ENOSPC])
    arn = sm.start_pipeline_execution(PipelineName="exhausted")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Failed"
    step = steps_of(sm, arn)["Flaky"]
    assert step["AttemptCount"] == 3  # one retry per policy, then the first one is used up
    assert step["FailureReason"].startswith("InternalServerError: ")
    reasons = [j["FailureReason"].split(":")[0] for j in _jobs(sm, arn.split("/")[-1])]
    assert reasons == ["InternalServerError", "CapacityError", "InternalServerError"]


def test_errors_of_the_job_itself_and_unmatched_faults_are_not_retried(local):
    service, sm, s3 = local
    every = [{"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR", "SageMaker.CAPACITY_ERROR",
                                "Step.SERVICE_FAULT"], "IntervalSeconds": 0, "MaxAttempts": 5}]
    _create(sm, "broken", [_script_step(s3, "Broken", "raise SystemExit(3)\n", every)])
    arn = sm.start_pipeline_execution(PipelineName="broken")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Failed"
    step = steps_of(sm, arn)["Broken"]
    assert step["AttemptCount"] == 1 and "exit code 3" in step["FailureReason"]
    # a fault no policy names fails at once; ExpireAfterMin 0 never retries
    _create(sm, "unmatched", [_script_step(s3, "Flaky", "print('ran')\n", [
        {"ExceptionType": ["SageMaker.CAPACITY_ERROR"], "IntervalSeconds": 0,
         "MaxAttempts": 5},
        {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "ExpireAfterMin": 0}])])
    _faults(service, [errno.ENOSPC])
    arn = sm.start_pipeline_execution(PipelineName="unmatched")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Failed"
    assert steps_of(sm, arn)["Flaky"]["AttemptCount"] == 1


def test_a_store_that_refuses_to_record_a_job_is_a_service_fault_retried(local):
    service, sm, s3 = local
    policy = {"ExceptionType": ["Step.SERVICE_FAULT"], "IntervalSeconds": 1, "MaxAttempts": 3}
    _create(sm, "storefault", [_script_step(s3, "Job", "print('ran')\n", [policy])])
    store, real_write, refused = service.store, service.store.write, []

    def write(kind, name, body, create=False):
        if kind == "processing-job" and not refused:
            refused.append(name)
            raise sqlite3.OperationalError("database or disk is full")
        return real_write(kind, name, body, create)

    store.write = write
    arn = sm.start_pipeline_execution(PipelineName="storefault")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Succeeded"
    assert refused and steps_of(sm, arn)["Job"]["AttemptCount"] == 2


@pytest.mark.parametrize("policy, message", [
    ({"ExceptionType": ["Step.NOT_A_TYPE"], "MaxAttempts": 1}, "ExceptionType must be"),
    ({"ExceptionType": ["Step.THROTTLING"], "MaxAttempts": 1, "ExpireAfterMin": 5},
     "exactly one of MaxAttempts and ExpireAfterMin"),
    ({"ExceptionType": ["Step.THROTTLING"], "MaxAttempts": 21}, "MaxAttempts must be"),
    ({"ExceptionType": ["Step.THROTTLING"], "MaxAttempts": 1, "IntervalSeconds": -1},
     "IntervalSeconds must be"),
    ({"ExceptionType": ["Step.THROTTLING"], "MaxAttempts": 1, "BackoffRate": "2"},
     "BackoffRate must be"),
])
def test_bad_retry_policies_are_refused_at_create_pipeline(local, policy, message):
    _, sm, s3 = local
    with pytest.raises(ClientError) as err:
        _create(sm, "bad", [_script_step(s3, "Job", "print('ran')\n", [policy])])
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert message in err.value.response["Error"]["Message"]


def test_retry_policies_on_a_step_type_that_cannot_retry_are_refused(local):
    _, sm, _ = local
    with pytest.raises(ClientError) as err:
        _create(sm, "bad", [{"Name": "Gate", "Type": "Condition", "Arguments": {
            "Conditions": []}, "RetryPolicies": [
                {"ExceptionType": ["Step.THROTTLING"], "MaxAttempts": 1}]}])
    assert "RetryPolicies are supported on Processing, Training" in \
        err.value.response["Error"]["Message"]


SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(2)\n"


def _overlaps(steps):
    """The most steps that ran at the same moment."""
    edges = sorted([(s["StartTime"], 1) for s in steps] + [(s["EndTime"], -1) for s in steps],
                   key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, change in edges:
        now += change
        most = max(most, now)
    return most


def test_independent_steps_run_side_by_side_up_to_the_parallelism_limit(local):
    _, sm, s3 = local
    steps = [_script_step(s3, f"Sleep{n}", SLEEPER) for n in range(3)]
    steps.append(_script_step(s3, "After", "print('after')\n",
                              depends_on=["Sleep0", "Sleep1", "Sleep2"]))
    _create(sm, "parallel", steps, ParallelismConfiguration={"MaxParallelExecutionSteps": 2})
    assert sm.describe_pipeline(PipelineName="parallel")["ParallelismConfiguration"] == \
        {"MaxParallelExecutionSteps": 2}
    arn = sm.start_pipeline_execution(PipelineName="parallel")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Succeeded"
    described = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 2}
    ran = steps_of(sm, arn)
    sleepers = [ran[f"Sleep{n}"] for n in range(3)]
    assert _overlaps(sleepers) == 2  # two at once, never three
    assert ran["After"]["StartTime"] >= max(s["EndTime"] for s in sleepers)

    # an execution's own configuration overrides the pipeline's: one at a time
    arn = sm.start_pipeline_execution(PipelineName="parallel", ParallelismConfiguration={
        "MaxParallelExecutionSteps": 1})["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Succeeded"
    ran = steps_of(sm, arn)
    assert _overlaps([ran[f"Sleep{n}"] for n in range(3)]) == 1


def test_a_failed_step_lets_running_ones_end_and_starts_no_more(local):
    _, sm, s3 = local
    steps = [_script_step(s3, "Fails", "raise SystemExit(1)\n"),
             _script_step(s3, "Sleeps", SLEEPER),
             _script_step(s3, "Later", "print('later')\n", depends_on=["Fails"]),
             _script_step(s3, "Third", "print('third')\n")]
    _create(sm, "failing", steps, ParallelismConfiguration={"MaxParallelExecutionSteps": 2})
    arn = sm.start_pipeline_execution(PipelineName="failing")["PipelineExecutionArn"]
    assert wait_for(sm, arn, timeout=60) == "Failed"
    ran = steps_of(sm, arn)
    assert ran["Fails"]["StepStatus"] == "Failed"
    assert ran["Sleeps"]["StepStatus"] == "Succeeded"  # it was running: it ended
    assert "Later" not in ran and "Third" not in ran  # nothing started after the failure
    assert sm.describe_pipeline_execution(PipelineExecutionArn=arn)["FailureReason"].startswith(
        "Step Fails failed")


def test_expire_after_min_bounds_retries_by_time_since_the_first_attempt():
    now = [1000.0]
    state = RetryState({"RetryPolicies": [{"ExceptionType": ["Step.SERVICE_FAULT"],
                                           "IntervalSeconds": 30, "BackoffRate": 2.0,
                                           "ExpireAfterMin": 2}]}, clock=lambda: now[0])
    assert state.delay("SageMaker.CAPACITY_ERROR") is None  # no policy names it
    assert state.delay("Step.SERVICE_FAULT") == 30  # ends 30 s in
    now[0] += 30
    assert state.delay("Step.SERVICE_FAULT") == 60  # ends 90 s in
    now[0] += 60
    assert state.delay("Step.SERVICE_FAULT") is None  # 90 + 120 s would pass 2 minutes


def test_a_running_executions_description_and_parallelism_can_be_updated(local):
    _, sm, s3 = local
    _create(sm, "updated", [_script_step(s3, "Sleep", SLEEPER)])
    arn = sm.start_pipeline_execution(PipelineName="updated")["PipelineExecutionArn"]
    sm.update_pipeline_execution(PipelineExecutionArn=arn, PipelineExecutionDescription="why",
                                 ParallelismConfiguration={"MaxParallelExecutionSteps": 3})
    described = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    assert described["PipelineExecutionDescription"] == "why"
    assert described["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": 3}
    assert wait_for(sm, arn, timeout=60) == "Succeeded"


def test_the_sdks_own_retry_policies_pass_the_check():
    from sagemaker.workflow.retry import (SageMakerJobExceptionTypeEnum,
                                          SageMakerJobStepRetryPolicy, StepExceptionTypeEnum,
                                          StepRetryPolicy)

    from pipeline.local.workflow import retry

    policies = [
        StepRetryPolicy(exception_types=[StepExceptionTypeEnum.SERVICE_FAULT,
                                         StepExceptionTypeEnum.THROTTLING],
                        expire_after_mins=5, interval_seconds=10).to_request(),
        SageMakerJobStepRetryPolicy(failure_reason_types=[
            SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
            SageMakerJobExceptionTypeEnum.CAPACITY_ERROR], max_attempts=10).to_request()]
    assert retry.check("Train", {"Type": "Training", "RetryPolicies": policies}) == []
    assert retry.check("Train", {"Type": "Training", "RetryPolicies": [
        dict(policies[1], MaxAttempts=0)]}) == []  # 0: never retried, as AWS documents


def test_steps_defined_before_what_they_depend_on_still_run(local):
    """Steps are scheduled by their dependencies, not their order in the definition: also when
    what a step waits for is taken from a selective execution's source, not run."""
    _, sm, s3 = local
    _create(sm, "order", [_script_step(s3, "Second", "print('second')\n", depends_on=["First"]),
                          _script_step(s3, "First", "print('first')\n")])
    source = sm.start_pipeline_execution(PipelineName="order")["PipelineExecutionArn"]
    assert wait_for(sm, source, timeout=60) == "Succeeded"
    ran = steps_of(sm, source)
    assert ran["Second"]["StartTime"] >= ran["First"]["EndTime"]
    again = sm.start_pipeline_execution(PipelineName="order", SelectiveExecutionConfig={
        "SourcePipelineExecutionArn": source, "SelectedSteps": [{"StepName": "Second"}]})[
        "PipelineExecutionArn"]
    assert wait_for(sm, again, timeout=60) == "Succeeded"
    ran = steps_of(sm, again)
    assert ran["First"]["SelectiveExecutionResult"]["SourcePipelineExecutionArn"] == source
    assert ran["Second"]["StepStatus"] == "Succeeded" and "SelectiveExecutionResult" not in \
        ran["Second"]


def test_expire_after_min_at_its_boundary():
    """A retry whose wait would end exactly at the limit is not made; one a second earlier is."""
    def state(interval):
        return RetryState({"RetryPolicies": [{"ExceptionType": ["Step.SERVICE_FAULT"],
                                              "IntervalSeconds": interval, "BackoffRate": 1.0,
                                              "ExpireAfterMin": 1}]}, clock=lambda: 500.0)
    assert state(60).delay("Step.SERVICE_FAULT") is None
    assert state(59).delay("Step.SERVICE_FAULT") == 59
