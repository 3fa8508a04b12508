"""What the CLI prints about executions: live step status, the summary after a run, one
execution in detail, the list. Steps, outputs and the evaluation report are found by the names
the definition is built from (``pipeline.config``), on AWS and locally alike."""
import json
import time

from botocore.exceptions import ClientError

from pipeline.config import EVALUATION, STEPS
from pipeline.local.workflow.expressions import StepFailed, json_path

FINAL_STATUSES = {"Succeeded", "Failed", "Stopped"}


def list_steps(sm, arn):
    """Every step of an execution, oldest first."""
    pages = sm.get_paginator("list_pipeline_execution_steps").paginate(
        PipelineExecutionArn=arn, SortOrder="Ascending")
    return [step for page in pages for step in page["PipelineExecutionSteps"]]


def parameters(sm, arn):
    pages = sm.get_paginator("list_pipeline_parameters_for_execution").paginate(
        PipelineExecutionArn=arn)
    return {p["Name"]: p["Value"] for page in pages for p in page["PipelineParameters"]}


def step_line(step):
    line = f"  {step['StepName']:<24} {step['StepStatus']}"
    if step.get("FailureReason"):
        line += f": {step['FailureReason']}"
    return line


def wait(target, arn, poll):
    """Print step status changes until the execution ends; its final description."""
    sm = target.clients.sagemaker
    seen, started = {}, time.time()
    while True:
        desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
        for step in list_steps(sm, arn):
            if seen.get(step["StepName"]) != step["StepStatus"]:
                seen[step["StepName"]] = step["StepStatus"]
                print(f"[{time.time() - started:6.1f}s]{step_line(step)}", flush=True)
        if desc["PipelineExecutionStatus"] in FINAL_STATUSES:
            break
        time.sleep(poll)
    print(f"execution {desc['PipelineExecutionStatus']} after {time.time() - started:.1f}s")
    if desc.get("FailureReason"):
        print(f"reason: {desc['FailureReason']}")
    return desc


def _read_s3_json(s3, uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _accuracy(target, step, params):
    sm = target.clients.sagemaker
    job = sm.describe_processing_job(
        ProcessingJobName=step["Metadata"]["ProcessingJob"]["Arn"].split("/")[-1])
    out = next(o for o in job["ProcessingOutputConfig"]["Outputs"]
               if o["OutputName"] == EVALUATION.output_name)
    uri = f"{out['S3Output']['S3Uri'].rstrip('/')}/{EVALUATION.file_name}"
    try:  # the same JSON path the gate's JsonGet reads
        value = json_path(_read_s3_json(target.clients.s3, uri), EVALUATION.accuracy_path)
        return (f"test accuracy: {value:.4f} "
                f"(threshold {params.get('AccuracyThreshold')})")
    except (ClientError, StepFailed, ValueError, TypeError) as err:
        return f"test accuracy: unavailable ({err})"


def summarize(target, arn):
    """What a person wants after a run: accuracy, the model package, the endpoint."""
    sm = target.clients.sagemaker
    steps = {s["StepName"]: s for s in list_steps(sm, arn)}
    params = parameters(sm, arn)
    evaluate = steps.get(STEPS.evaluate, {})
    if evaluate.get("StepStatus") == "Succeeded" and "ProcessingJob" in evaluate["Metadata"]:
        print(_accuracy(target, evaluate, params))
    register = next((s["Metadata"]["RegisterModel"]["Arn"] for s in steps.values()
                     if "RegisterModel" in s.get("Metadata", {})), None)
    if register:
        print(f"model package: {register}")
    name = params.get("EndpointName")
    if steps.get(STEPS.deploy, {}).get("StepStatus") != "Succeeded" or not name:
        return
    try:
        endpoint = sm.describe_endpoint(EndpointName=name)
    except ClientError:
        print(f"endpoint {name}: deleted by {STEPS.cleanup} (KeepEndpoint=false)")
        return
    print(f"endpoint: {name} ({endpoint['EndpointStatus']}, config "
          f"{endpoint['EndpointConfigName']})")
    for line in target.invoke_hints(name):
        print(f"  {line}")
    print(f"  delete it: {target.command(f'delete-endpoint {name}')}")


def describe(target, arn):
    """One execution: status, parameters, steps with their jobs, metrics and outcomes."""
    sm = target.clients.sagemaker
    desc = sm.describe_pipeline_execution(PipelineExecutionArn=arn)
    print(f"execution {arn}")
    print(f"status    {desc['PipelineExecutionStatus']}")
    if desc.get("FailureReason"):
        print(f"reason    {desc['FailureReason']}")
    print("parameters: " + ", ".join(f"{k}={v}" for k, v in parameters(sm, arn).items()))
    print("steps:")
    for step in list_steps(sm, arn):
        print(step_line(step))
        meta = step.get("Metadata", {})
        for kind, value in meta.items():
            if isinstance(value, dict) and "Arn" in value:
                print(f"    {kind}: {value['Arn']}")
        if "TrainingJob" in meta:
            job = sm.describe_training_job(
                TrainingJobName=meta["TrainingJob"]["Arn"].split("/")[-1])
            metrics = ", ".join(f"{m['MetricName']}={m['Value']:.4f}"
                                for m in job.get("FinalMetricDataList", []))
            if metrics:
                print(f"    final metrics: {metrics}")
        if "Condition" in meta:
            print(f"    outcome: {meta['Condition'].get('Outcome')}")
    return desc


def executions(sm, pipeline_name, limit):
    rows = sm.list_pipeline_executions(PipelineName=pipeline_name, SortBy="CreationTime",
                                       SortOrder="Descending", MaxResults=limit)[
        "PipelineExecutionSummaries"]
    if not rows:
        print(f"no executions of {pipeline_name}")
    for row in rows:
        print(f"{row['PipelineExecutionArn'].split('/')[-1]:<16} "
              f"{row['PipelineExecutionStatus']:<10} {row['StartTime']:%Y-%m-%d %H:%M:%S} "
              f"{row.get('PipelineExecutionDisplayName', '')}")
