"""Hosting: models, endpoint configs and endpoints (Create*, Describe*, List*, Update*,
Delete*). The model-server processes are ``endpoints.Hosting``'s; a model may name a
registered package (the ``registry``)."""
import time

from pipeline.local import constraints
from pipeline.local.backend.common import Family, as_kwargs, aws_names
from pipeline.local.backend.listing import list_answer
from pipeline.local.backend.records import variant_summary
from pipeline.local.errors import validation
from pipeline.local.resources import SERVICE_MODEL, Endpoint, EndpointConfig, Model


class HostingApi(Family):
    def __init__(self, store, region, tags, registry, servers):
        """``servers``: the model-server processes (``endpoints.Hosting``)."""
        super().__init__(store, region, tags)
        self.registry, self.servers = registry, servers

    # -------------------------------------------------------------- models
    def create_model(self, model_name, primary_container=None, containers=None,
                     execution_role_arn="", tags=None, **members):
        """Every other member (VpcConfig, EnableNetworkIsolation, ...) is kept as given and
        described back, as AWS does; the local model server runs on loopback whatever they say."""
        given = containers or ([primary_container] if primary_container else [])
        if not given:
            raise validation("A model needs PrimaryContainer or Containers")
        if members.get("inference_execution_config", {}).get("Mode") == "Direct":
            raise validation("InferenceExecutionConfig Mode Direct (invoking one container of "
                             "several) is not supported by the local service")
        resolved = [self._resolve_container(c) for c in given]
        arn = Model.arn(self.region, model_name)
        doc = {**aws_names("CreateModel", members),
               "ModelName": model_name, "ModelArn": arn, "CreationTime": time.time(),
               "ExecutionRoleArn": execution_role_arn, "PrimaryContainer": resolved[0]}
        if containers:
            doc["Containers"] = resolved
        self._create(Model, model_name, doc,
                     validation(f"Cannot create already existing model \"{arn}\"."), tags)
        return {"ModelArn": arn}

    def _resolve_container(self, container):
        """A container may name a model package; use its image, data and environment."""
        if container.get("ModelPackageName"):
            package = self.registry.package(container["ModelPackageName"])
            spec = package["InferenceSpecification"]["Containers"][0]
            merged = {"Image": spec["Image"], "ModelDataUrl": spec.get("ModelDataUrl"),
                      "Environment": {**spec.get("Environment", {}),
                                      **container.get("Environment", {})},
                      "ModelPackageName": container["ModelPackageName"]}
            return {k: v for k, v in merged.items() if v}
        if not container.get("ModelDataUrl"):
            raise validation("The local service serves models with a ModelDataUrl")
        return container

    def create_model_from_step(self, request: dict) -> dict:
        """A Model step: its arguments are a CreateModel request."""
        constraints.check(request, SERVICE_MODEL.operation_model("CreateModel").input_shape)
        self.create_model(**as_kwargs(request))
        return self.describe_model(request["ModelName"])

    def describe_model(self, model_name):
        return Model.describe(self._get(Model, model_name))

    def delete_model(self, model_name):
        self._delete(Model, model_name)
        return {}

    def list_models(self, **query):
        return list_answer(Model, self.store.list(Model.kind), **query)

    # ---------------------------------------------------- endpoint configs
    def create_endpoint_config(self, endpoint_config_name, production_variants, tags=None,
                               **members):
        """Every other member (DataCaptureConfig, KmsKeyId, AsyncInferenceConfig...) is kept
        as given and described back, as AWS does."""
        name = endpoint_config_name
        for variant in production_variants:
            self._get(Model, variant["ModelName"])
            memory = variant.get("ServerlessConfig", {}).get("MemorySizeInMB")
            if memory is not None and memory % 1024:  # botocore checks 1024-6144 only
                raise validation(f"ServerlessConfig.MemorySizeInMB of variant "
                                 f"{variant.get('VariantName')} is {memory}: valid values are "
                                 "1 GB steps, 1024, 2048, 3072, 4096, 5120 or 6144 MB")
        arn = EndpointConfig.arn(self.region, name)
        self._create(EndpointConfig, name, {
            **aws_names("CreateEndpointConfig", members),
            "EndpointConfigName": name, "EndpointConfigArn": arn,
            "ProductionVariants": production_variants, "CreationTime": time.time()},
            validation(f"Cannot create already existing endpoint configuration \"{arn}\"."),
            tags)
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, endpoint_config_name):
        return EndpointConfig.describe(self._get(EndpointConfig, endpoint_config_name))

    def delete_endpoint_config(self, endpoint_config_name):
        self._delete(EndpointConfig, endpoint_config_name)
        return {}

    def list_endpoint_configs(self, **query):
        return list_answer(EndpointConfig, self.store.list(EndpointConfig.kind), **query)

    # ----------------------------------------------------------- endpoints
    def create_endpoint(self, endpoint_name, endpoint_config_name, tags=None,
                        deployment_config=None):
        _no_deployment_config(deployment_config)
        self._get(EndpointConfig, endpoint_config_name)
        arn = Endpoint.arn(self.region, endpoint_name)
        now = time.time()
        self._create(Endpoint, endpoint_name, {
            "EndpointName": endpoint_name, "EndpointArn": arn,
            "EndpointConfigName": endpoint_config_name, "EndpointStatus": "Creating",
            "CreationTime": now, "LastModifiedTime": now},
            validation(f"Cannot create already existing endpoint \"{arn}\"."), tags)
        self.servers.deploy(endpoint_name, endpoint_config_name)
        return {"EndpointArn": arn}

    def update_endpoint(self, endpoint_name, endpoint_config_name, deployment_config=None):
        _no_deployment_config(deployment_config)
        with self.store.lock:
            self._get(EndpointConfig, endpoint_config_name)
            doc = self._transition(Endpoint, endpoint_name, "Updating",
                                   "Cannot update in-progress endpoint \"{arn}\".",
                                   FailureReason=None, LastModifiedTime=time.time())
        self.servers.deploy(endpoint_name, endpoint_config_name)
        return {"EndpointArn": doc["EndpointArn"]}

    def update_endpoint_weights_and_capacities(self, endpoint_name,
                                               desired_weights_and_capacities):
        """New weights and instance counts for an InService endpoint's variants, recorded as
        its variants' current ones (one local model server serves the endpoint whatever the
        counts; with several variants the first one answers)."""
        with self.store.lock:
            doc = self._get(Endpoint, endpoint_name)
            status = doc["EndpointStatus"]
            if status in ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"):
                raise validation(f"Cannot update in-progress endpoint \"{doc['EndpointArn']}\".")
            if status != "InService":
                raise validation(f"Cannot update endpoint \"{doc['EndpointArn']}\": it is "
                                 f"{status}; only an InService endpoint's weights and "
                                 "capacities can be updated.")
            variants = {v["VariantName"]: v for v in doc.get("ProductionVariants", [])}
            unknown = [d["VariantName"] for d in desired_weights_and_capacities
                       if d["VariantName"] not in variants]
            if unknown:
                raise validation(f"The variant name(s) {unknown} are not present in endpoint "
                                 f"{endpoint_name}; it has {sorted(variants)}.")
            for desired in desired_weights_and_capacities:
                old = variants[desired["VariantName"]]
                variants[desired["VariantName"]] = variant_summary(
                    old["VariantName"], desired.get("DesiredWeight", old["CurrentWeight"]),
                    desired.get("DesiredInstanceCount", old["CurrentInstanceCount"]))
            self.store.put(Endpoint.kind, endpoint_name, {
                **doc, "ProductionVariants": list(variants.values()),
                "LastModifiedTime": time.time()})
        return {"EndpointArn": doc["EndpointArn"]}

    def describe_endpoint(self, endpoint_name):
        return Endpoint.describe(self._get(Endpoint, endpoint_name))

    def delete_endpoint(self, endpoint_name):
        self._get(Endpoint, endpoint_name)
        # the record goes first: the invocations its stopping server passes back (answered
        # there, or pipelined after) then hear that the endpoint is gone
        self.store.delete(Endpoint.kind, endpoint_name)
        self.servers.remove(endpoint_name)
        return {}

    def list_endpoints(self, **query):
        return list_answer(Endpoint, self.store.list(Endpoint.kind), **query)


def _no_deployment_config(deployment_config):
    if deployment_config:
        raise validation("DeploymentConfig is not applied by the local service: an update "
                         "switches all traffic at once, when the new model answers /ping (no "
                         "blue/green or rolling steps, no alarms, no auto-rollback)")
