"""The SageMaker operations of the local service: state changes, no HTTP (see responses.py).

Method names are the API's operation names in snake_case; each takes the request dict and
returns the response dict, raising ServiceError with AWS's error codes.
"""
import json
import secrets
import threading
import time
from typing import Dict, Optional

from pipeline.local.store import Store

ACCOUNT = "000000000000"


class ServiceError(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _paginate(items, request, key):
    """NextToken is the index of the next item, as a string."""
    start = int(request.get("NextToken") or 0)
    limit = int(request.get("MaxResults") or 100)
    page = items[start:start + limit]
    response = {key: page}
    if start + limit < len(items):
        response["NextToken"] = str(start + limit)
    return response


def _sorted(items, request, default_key="CreationTime", keys=None):
    key = (keys or {}).get(request.get("SortBy"), default_key)
    reverse = request.get("SortOrder", "Descending") == "Descending"
    return sorted(items, key=lambda i: (i.get(key) is None, i.get(key) or 0), reverse=reverse)


def _summaries(items, request, out_key, name_key, keys, status_key=None):
    """A List* answer: NameContains / CreationTime / StatusEquals filters, the summary fields,
    SortBy / SortOrder, then one page."""
    items = _name_filter(items, request, name_key)
    if status_key and request.get("StatusEquals"):
        items = [i for i in items if i[status_key] == request["StatusEquals"]]
    items = [{k: i[k] for k in keys if k in i} for i in items]
    sort_keys = {"Name": name_key, "Status": status_key} if status_key else {"Name": name_key}
    return _paginate(_sorted(items, request, keys=sort_keys), request, out_key)


def _name_filter(items, request, field):
    needle = request.get("NameContains")
    if needle:
        items = [i for i in items if needle.lower() in i[field].lower()]
    after, before = request.get("CreationTimeAfter"), request.get("CreationTimeBefore")
    if after:
        items = [i for i in items if i["CreationTime"] > _epoch(after)]
    if before:
        items = [i for i in items if i["CreationTime"] < _epoch(before)]
    return items


def _epoch(value):
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import datetime
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


class SageMakerBackend:
    """State and operations. ``executor`` and ``endpoints`` do the long-running work."""

    def __init__(self, store: Store, region: str = "us-east-1"):
        self.store, self.region = store, region
        self.executor = None  # set by the service: pipeline.local.executor.Executor
        self.hosting = None  # set by the service: pipeline.local.endpoints.Hosting
        self.lock = threading.RLock()

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{ACCOUNT}:{kind}/{name}"

    def _require(self, kind, name, what, code="ValidationException", message=None):
        """The stored document, or AWS's error for a missing one."""
        item = self.store.get(kind, name)
        if item is None:
            raise ServiceError(code, message or f"Could not find {what} \"{name}\".")
        return item

    # ------------------------------------------------------------------ tags
    def _tags(self, arn):
        return (self.store.get("tags", arn) or {"Tags": []})["Tags"]

    def _set_tags(self, arn, tags):
        if tags:
            current = {t["Key"]: t["Value"] for t in self._tags(arn)}
            current.update({t["Key"]: t.get("Value", "") for t in tags})
            self.store.put("tags", arn, {"Tags": [{"Key": k, "Value": v}
                                                  for k, v in current.items()]})

    def add_tags(self, r):
        self._set_tags(r["ResourceArn"], r["Tags"])
        return {"Tags": r["Tags"]}

    def list_tags(self, r):
        return _paginate(self._tags(r["ResourceArn"]), r, "Tags")

    def delete_tags(self, r):
        keep = [t for t in self._tags(r["ResourceArn"]) if t["Key"] not in set(r["TagKeys"])]
        self.store.put("tags", r["ResourceArn"], {"Tags": keep})
        return {}

    # ------------------------------------------------------------- pipelines
    def create_pipeline(self, r):
        name = r["PipelineName"]
        with self.lock:
            if self.store.get("pipeline", name):
                raise ServiceError("ResourceInUse", f"Pipeline {name} already exists.")
            definition = self._definition(r)
            now = time.time()
            arn = self.arn("pipeline", name.lower())
            self.store.put("pipeline", name, {
                "PipelineArn": arn, "PipelineName": name,
                "PipelineDisplayName": r.get("PipelineDisplayName", name),
                "PipelineDefinition": definition, "PipelineDescription":
                r.get("PipelineDescription", ""), "RoleArn": r["RoleArn"],
                "PipelineStatus": "Active", "CreationTime": now, "LastModifiedTime": now,
                "PipelineVersionId": 1})
            self._set_tags(arn, r.get("Tags"))
        return {"PipelineArn": arn}

    @staticmethod
    def _definition(r):
        text = r.get("PipelineDefinition")
        if not text:
            raise ServiceError("ValidationException",
                               "PipelineDefinition is required (PipelineDefinitionS3Location is "
                               "not supported by the local service)")
        try:
            definition = json.loads(text)
        except ValueError as err:
            raise ServiceError("ValidationException", f"PipelineDefinition is not JSON: {err}")
        from pipeline.local.executor import DefinitionError, check_definition
        try:
            check_definition(definition)
        except DefinitionError as err:
            raise ServiceError("ValidationException", f"Invalid pipeline definition: {err}")
        return text

    def update_pipeline(self, r):
        name = r["PipelineName"]
        with self.lock:
            item = self.describe_pipeline(r)
            if "PipelineDefinition" in r:
                item["PipelineDefinition"] = self._definition(r)
            for key in ("RoleArn", "PipelineDescription", "PipelineDisplayName"):
                if key in r:
                    item[key] = r[key]
            item["LastModifiedTime"] = time.time()
            item["PipelineVersionId"] = item.get("PipelineVersionId", 1) + 1
            self.store.put("pipeline", name, item)
        return {"PipelineArn": item["PipelineArn"]}

    def describe_pipeline(self, r):
        name = r["PipelineName"].split("/")[-1]
        return self._require("pipeline", name, "", "ResourceNotFound",
                             f"Pipeline '{name}' does not exist.")

    def delete_pipeline(self, r):
        item = self.describe_pipeline(r)
        self.store.delete("pipeline", item["PipelineName"])
        return {"PipelineArn": item["PipelineArn"]}

    def list_pipelines(self, r):
        items = [p for p in self.store.list("pipeline")
                 if p["PipelineName"].startswith(r.get("PipelineNamePrefix", ""))]
        return _summaries(items, r, "PipelineSummaries", "PipelineName", (
            "PipelineArn", "PipelineName", "PipelineDisplayName", "PipelineDescription",
            "RoleArn", "CreationTime", "LastModifiedTime"))

    # ------------------------------------------------------------ executions
    def start_pipeline_execution(self, r):
        pipeline = self.describe_pipeline(r)
        definition = json.loads(pipeline["PipelineDefinition"])
        declared = {p["Name"]: p for p in definition.get("Parameters", [])}
        given = {p["Name"]: p["Value"] for p in r.get("PipelineParameters", [])}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ServiceError("ValidationException",
                               f"Parameters not declared by the pipeline: {', '.join(unknown)}")
        from pipeline.local.executor import coerce_parameter
        values = {}
        for name, spec in declared.items():
            raw = given.get(name, spec.get("DefaultValue"))
            if raw is None:
                raise ServiceError("ValidationException", f"Parameter {name} has no value")
            try:
                values[name] = coerce_parameter(spec, raw)
            except ValueError as err:
                raise ServiceError("ValidationException", str(err))
        execution_id = secrets.token_hex(6)
        arn = f"{pipeline['PipelineArn']}/execution/{execution_id}"
        now = time.time()
        self.store.put("execution", arn, {
            "PipelineArn": pipeline["PipelineArn"], "PipelineExecutionArn": arn,
            "PipelineExecutionDisplayName": r.get("PipelineExecutionDisplayName", execution_id),
            "PipelineExecutionDescription": r.get("PipelineExecutionDescription", ""),
            "PipelineExecutionStatus": "Executing", "CreationTime": now, "LastModifiedTime": now,
            "PipelineDefinition": pipeline["PipelineDefinition"], "Parameters": values,
            "ParametersGiven": [{"Name": k, "Value": str(v)} for k, v in given.items()],
            "RoleArn": pipeline["RoleArn"]})
        self.executor.start(arn)
        return {"PipelineExecutionArn": arn}

    def _execution(self, arn):
        return self._require("execution", arn, "", "ResourceNotFound",
                             f"Pipeline execution '{arn}' does not exist.")

    def describe_pipeline_execution(self, r):
        item = self._execution(r["PipelineExecutionArn"])
        keys = ("PipelineArn", "PipelineExecutionArn", "PipelineExecutionDisplayName",
                "PipelineExecutionStatus", "PipelineExecutionDescription", "FailureReason",
                "CreationTime", "LastModifiedTime")
        out = {k: item[k] for k in keys if k in item}
        out["PipelineExperimentConfig"] = {}
        return out

    def describe_pipeline_definition_for_execution(self, r):
        item = self._execution(r["PipelineExecutionArn"])
        return {"PipelineDefinition": item["PipelineDefinition"],
                "CreationTime": item["CreationTime"]}

    def list_pipeline_executions(self, r):
        pipeline = self.describe_pipeline(r)
        items = [{k: e[k] for k in ("PipelineExecutionArn", "PipelineExecutionStatus",
                                    "PipelineExecutionDisplayName") if k in e}
                 | {"StartTime": e["CreationTime"]}
                 | ({"PipelineExecutionFailureReason": e["FailureReason"]}
                    if "FailureReason" in e else {})
                 for e in self.store.list("execution")
                 if e["PipelineArn"] == pipeline["PipelineArn"]]
        items = _sorted(items, r, default_key="StartTime")
        return _paginate(items, r, "PipelineExecutionSummaries")

    def list_pipeline_execution_steps(self, r):
        arn = r["PipelineExecutionArn"]
        self._execution(arn)
        steps = [{k: v for k, v in s.items() if k not in ("ExecutionArn", "Properties")}
                 for s in self.store.list("step", prefix=f"{arn}|")]
        steps.sort(key=lambda s: s["StartTime"], reverse=r.get("SortOrder") != "Ascending")
        return _paginate(steps, r, "PipelineExecutionSteps")

    def list_pipeline_parameters_for_execution(self, r):
        item = self._execution(r["PipelineExecutionArn"])
        params = [{"Name": k, "Value": str(v).lower() if isinstance(v, bool) else str(v)}
                  for k, v in item["Parameters"].items()]
        return _paginate(params, r, "PipelineParameters")

    def stop_pipeline_execution(self, r):
        arn = r["PipelineExecutionArn"]
        item = self._execution(arn)
        if item["PipelineExecutionStatus"] != "Executing":
            raise ServiceError("ValidationException",
                               f"Execution is {item['PipelineExecutionStatus']}, not Executing")
        self.store.update("execution", arn, PipelineExecutionStatus="Stopping",
                          LastModifiedTime=time.time())
        self.executor.stop(arn)
        return {"PipelineExecutionArn": arn}

    def retry_pipeline_execution(self, r):
        arn = r["PipelineExecutionArn"]
        item = self._execution(arn)
        if item["PipelineExecutionStatus"] not in ("Failed", "Stopped"):
            raise ServiceError("ValidationException", f"Only a Failed or Stopped execution can "
                               f"be retried; this one is {item['PipelineExecutionStatus']}")
        self.store.update("execution", arn, PipelineExecutionStatus="Executing",
                          FailureReason=None, LastModifiedTime=time.time())
        self.executor.start(arn)
        return {"PipelineExecutionArn": arn}

    # ------------------------------------------------------------------ jobs
    def describe_processing_job(self, r):
        return self._require("processing-job", r["ProcessingJobName"], "processing job",
                             "ResourceNotFound")

    def describe_training_job(self, r):
        return self._require("training-job", r["TrainingJobName"], "training job",
                             "ResourceNotFound")

    def _list_jobs(self, kind, r, prefix, out_key):
        return _summaries(self.store.list(kind), r, out_key, f"{prefix}Name", (
            f"{prefix}Name", f"{prefix}Arn", f"{prefix}Status", "CreationTime",
            "LastModifiedTime", f"{prefix.replace('Job', '')}EndTime", "FailureReason",
            "ExitMessage"), f"{prefix}Status")

    def list_processing_jobs(self, r):
        return self._list_jobs("processing-job", r, "ProcessingJob", "ProcessingJobSummaries")

    def list_training_jobs(self, r):
        return self._list_jobs("training-job", r, "TrainingJob", "TrainingJobSummaries")

    # -------------------------------------------------------------- registry
    def create_model_package_group(self, r):
        name = r["ModelPackageGroupName"]
        with self.lock:
            if self.store.get("model-package-group", name):
                raise ServiceError("ValidationException",
                                   f"Model Package Group already exists: {name}")
            arn = self.arn("model-package-group", name.lower())
            self.store.put("model-package-group", name, {
                "ModelPackageGroupName": name, "ModelPackageGroupArn": arn,
                "ModelPackageGroupDescription": r.get("ModelPackageGroupDescription", ""),
                "CreationTime": time.time(), "ModelPackageGroupStatus": "Completed"})
            self._set_tags(arn, r.get("Tags"))
        return {"ModelPackageGroupArn": arn}

    def describe_model_package_group(self, r):
        return self._require("model-package-group", r["ModelPackageGroupName"].split("/")[-1],
                             "model package group")

    def list_model_package_groups(self, r):
        return _summaries(self.store.list("model-package-group"), r,
                          "ModelPackageGroupSummaryList", "ModelPackageGroupName", (
                              "ModelPackageGroupName", "ModelPackageGroupArn",
                              "ModelPackageGroupDescription", "CreationTime",
                              "ModelPackageGroupStatus"))

    def delete_model_package_group(self, r):
        name = r["ModelPackageGroupName"]
        self._require("model-package-group", name, "model package group")
        if any(p["ModelPackageGroupName"] == name for p in self.store.list("model-package")):
            raise ServiceError("ConflictException",
                               f"Model package group {name} still has model packages")
        self.store.delete("model-package-group", name)
        return {}

    def create_model_package(self, r):
        group = r.get("ModelPackageGroupName")
        if not group:
            raise ServiceError("ValidationException",
                               "Only versioned model packages (ModelPackageGroupName) are "
                               "supported by the local service")
        with self.lock:
            if self.store.get("model-package-group", group) is None:
                self.create_model_package_group({"ModelPackageGroupName": group})
            version = 1 + sum(1 for p in self.store.list("model-package")
                              if p["ModelPackageGroupName"] == group)
            arn = self.arn("model-package", f"{group.lower()}/{version}")
            item = {k: v for k, v in r.items() if k not in ("Tags", "ClientToken")}
            item.update({"ModelPackageGroupName": group, "ModelPackageVersion": version,
                         "ModelPackageArn": arn, "ModelPackageName": group,
                         "ModelPackageStatus": "Completed", "CreationTime": time.time(),
                         "LastModifiedTime": time.time(),
                         "ModelApprovalStatus": r.get("ModelApprovalStatus",
                                                      "PendingManualApproval"),
                         "ModelPackageStatusDetails": {"ValidationStatuses": [],
                                                       "ImageScanStatuses": []}})
            self.store.put("model-package", arn, item)
            self._set_tags(arn, r.get("Tags"))
        return {"ModelPackageArn": arn}

    def _package(self, ref):
        return self._require("model-package", ref, "", message=f"ModelPackage {ref} does not "
                             "exist.")

    def describe_model_package(self, r):
        return self._package(r["ModelPackageName"])

    def list_model_packages(self, r):
        items = self.store.list("model-package")
        if r.get("ModelPackageGroupName"):
            items = [p for p in items if p["ModelPackageGroupName"] == r["ModelPackageGroupName"]]
        if r.get("ModelApprovalStatus"):
            items = [p for p in items if p["ModelApprovalStatus"] == r["ModelApprovalStatus"]]
        return _summaries(items, r, "ModelPackageSummaryList", "ModelPackageName", (
            "ModelPackageGroupName", "ModelPackageVersion", "ModelPackageArn",
            "ModelPackageDescription", "CreationTime", "ModelPackageStatus",
            "ModelApprovalStatus", "ModelPackageName"))

    def update_model_package(self, r):
        arn = r["ModelPackageArn"]
        item = self._package(arn)
        for key in ("ModelApprovalStatus", "ApprovalDescription", "CustomerMetadataProperties"):
            if key in r:
                item[key] = r[key]
        item["LastModifiedTime"] = time.time()
        self.store.put("model-package", arn, item)
        return {"ModelPackageArn": arn}

    def delete_model_package(self, r):
        item = self._package(r["ModelPackageName"])
        self.store.delete("model-package", item["ModelPackageArn"])
        return {}

    # --------------------------------------------------------------- hosting
    def create_model(self, r):
        name = r["ModelName"]
        with self.lock:
            if self.store.get("model", name):
                raise ServiceError("ValidationException",
                                   f"Cannot create already existing model \"{self.arn('model', name)}\".")
            containers = r.get("Containers") or ([r["PrimaryContainer"]]
                                                 if r.get("PrimaryContainer") else [])
            if not containers:
                raise ServiceError("ValidationException",
                                   "A model needs PrimaryContainer or Containers")
            resolved = [self._resolve_container(c) for c in containers]
            arn = self.arn("model", name.lower())
            item = {"ModelName": name, "ModelArn": arn, "CreationTime": time.time(),
                    "ExecutionRoleArn": r.get("ExecutionRoleArn", ""),
                    "PrimaryContainer": resolved[0]}
            if r.get("Containers"):
                item["Containers"] = resolved
            self.store.put("model", name, item)
            self._set_tags(arn, r.get("Tags"))
        return {"ModelArn": arn}

    def _resolve_container(self, container):
        """A container may name a model package; use its image, data and environment."""
        if container.get("ModelPackageName"):
            package = self._package(container["ModelPackageName"])
            spec = package["InferenceSpecification"]["Containers"][0]
            merged = {"Image": spec["Image"], "ModelDataUrl": spec.get("ModelDataUrl"),
                      "Environment": {**spec.get("Environment", {}),
                                      **container.get("Environment", {})},
                      "ModelPackageName": container["ModelPackageName"]}
            return {k: v for k, v in merged.items() if v}
        if not container.get("ModelDataUrl"):
            raise ServiceError("ValidationException",
                               "The local service serves models with a ModelDataUrl")
        return container

    def describe_model(self, r):
        return self._require("model", r["ModelName"], "model")

    def delete_model(self, r):
        self._require("model", r["ModelName"], "model")
        self.store.delete("model", r["ModelName"])
        return {}

    def list_models(self, r):
        return _summaries(self.store.list("model"), r, "Models", "ModelName",
                          ("ModelName", "ModelArn", "CreationTime"))

    def create_endpoint_config(self, r):
        name = r["EndpointConfigName"]
        with self.lock:
            if self.store.get("endpoint-config", name):
                raise ServiceError("ValidationException", f"Cannot create already existing "
                                   f"endpoint configuration \"{self.arn('endpoint-config', name)}\".")
            for variant in r["ProductionVariants"]:
                if self.store.get("model", variant["ModelName"]) is None:
                    raise ServiceError("ValidationException",
                                       f"Could not find model \"{variant['ModelName']}\".")
            arn = self.arn("endpoint-config", name.lower())
            self.store.put("endpoint-config", name, {
                "EndpointConfigName": name, "EndpointConfigArn": arn,
                "ProductionVariants": r["ProductionVariants"], "CreationTime": time.time()})
            self._set_tags(arn, r.get("Tags"))
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, r):
        return self._require("endpoint-config", r["EndpointConfigName"],
                             "endpoint configuration")

    def delete_endpoint_config(self, r):
        self.describe_endpoint_config(r)
        self.store.delete("endpoint-config", r["EndpointConfigName"])
        return {}

    def list_endpoint_configs(self, r):
        return _summaries(self.store.list("endpoint-config"), r, "EndpointConfigs",
                          "EndpointConfigName",
                          ("EndpointConfigName", "EndpointConfigArn", "CreationTime"))

    def create_endpoint(self, r):
        name = r["EndpointName"]
        with self.lock:
            if self.store.get("endpoint", name):
                raise ServiceError("ValidationException", f"Cannot create already existing "
                                   f"endpoint \"{self.arn('endpoint', name)}\".")
            self.describe_endpoint_config({"EndpointConfigName": r["EndpointConfigName"]})
            arn = self.arn("endpoint", name.lower())
            now = time.time()
            self.store.put("endpoint", name, {
                "EndpointName": name, "EndpointArn": arn,
                "EndpointConfigName": r["EndpointConfigName"], "EndpointStatus": "Creating",
                "CreationTime": now, "LastModifiedTime": now})
            self._set_tags(arn, r.get("Tags"))
        self.hosting.deploy(name, r["EndpointConfigName"])
        return {"EndpointArn": arn}

    def update_endpoint(self, r):
        name = r["EndpointName"]
        with self.lock:
            item = self._require("endpoint", name, "endpoint")
            if item["EndpointStatus"] not in ("InService", "Failed"):
                raise ServiceError("ValidationException", f"Cannot update in-progress endpoint "
                                   f"\"{item['EndpointArn']}\".")
            self.describe_endpoint_config({"EndpointConfigName": r["EndpointConfigName"]})
            self.store.update("endpoint", name, EndpointStatus="Updating",
                              LastModifiedTime=time.time(), FailureReason=None)
        self.hosting.deploy(name, r["EndpointConfigName"])
        return {"EndpointArn": item["EndpointArn"]}

    def describe_endpoint(self, r):
        return self._require("endpoint", r["EndpointName"], "endpoint")

    def delete_endpoint(self, r):
        self._require("endpoint", r["EndpointName"], "endpoint")
        self.hosting.remove(r["EndpointName"])
        self.store.delete("endpoint", r["EndpointName"])
        return {}

    def list_endpoints(self, r):
        return _summaries(self.store.list("endpoint"), r, "Endpoints", "EndpointName", (
            "EndpointName", "EndpointArn", "CreationTime", "LastModifiedTime", "EndpointStatus"),
            "EndpointStatus")

    # -------------------------------------------------------------- internal
    def endpoint_model(self, endpoint_config_name: str) -> Optional[Dict]:
        config = self.store.get("endpoint-config", endpoint_config_name)
        if config is None:
            return None
        return self.store.get("model", config["ProductionVariants"][0]["ModelName"])
