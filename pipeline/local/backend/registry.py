"""The model registry: model package groups and model packages (versions of a group, or
unversioned), approval, and SageMaker's "Model Package State Change" events on the ``outbox``.

A group's versions come from a counter kept in the store: a version number is never given
twice, whatever is deleted (AWS never reuses one), and a create never overwrites.
"""
import time

from pipeline.local import constraints
from pipeline.local.backend.common import Family, as_kwargs, aws_names
from pipeline.local.backend.listing import list_answer
from pipeline.local.errors import ServiceError, validation
from pipeline.local.resources import SERVICE_MODEL, ModelPackage, ModelPackageGroup

MAX_ADDITIONAL_SPECIFICATIONS = 15  # as AWS documents


class RegistryApi(Family):
    def __init__(self, store, region, tags, outbox):
        super().__init__(store, region, tags)
        self.outbox = outbox

    # -------------------------------------------------------------- groups
    def create_model_package_group(self, model_package_group_name,
                                   model_package_group_description="", tags=None):
        name = model_package_group_name
        arn = ModelPackageGroup.arn(self.region, name)
        self._create(ModelPackageGroup, name, {
            "ModelPackageGroupName": name, "ModelPackageGroupArn": arn,
            "ModelPackageGroupDescription": model_package_group_description,
            "CreationTime": time.time(), "ModelPackageGroupStatus": "Completed",
            "CreatedBy": {}},  # no Studio user profile or domain here
            validation(f"Model Package Group already exists: {name}"), tags)
        return {"ModelPackageGroupArn": arn}

    def describe_model_package_group(self, model_package_group_name):
        return ModelPackageGroup.describe(
            self._get(ModelPackageGroup, model_package_group_name.split("/")[-1]))

    def list_model_package_groups(self, cross_account_filter_option=None, **query):
        docs = self.store.list(ModelPackageGroup.kind)
        if cross_account_filter_option == "CrossAccount":
            docs = []  # one account here: no group is shared from another
        return list_answer(ModelPackageGroup, docs, **query)

    def delete_model_package_group(self, model_package_group_name):
        name = model_package_group_name
        with self.store.lock:
            self._get(ModelPackageGroup, name)
            if any(p.get("ModelPackageGroupName") == name
                   for p in self.store.list(ModelPackage.kind)):
                raise ServiceError("ConflictException",
                                   f"Model package group {name} still has model packages")
            self.store.delete(ModelPackageGroup.kind, name)
        return {}

    # ------------------------------------------------------------ packages
    def create_model_package(self, model_package_group_name=None, tags=None,
                             client_token=None, **members):
        """A version in a group (ModelPackageGroupName), or an unversioned package
        (ModelPackageName, no approval status: it does not apply to them). Every other member
        is kept as given (in AWS's spelling)."""
        group, name = model_package_group_name, members.pop("model_package_name", None)
        if group and name:
            raise validation("ModelPackageName is for unversioned model packages; a versioned "
                             "one (ModelPackageGroupName) cannot have it")
        if not group and not name:
            raise validation("ModelPackageName is required for an unversioned model package, "
                             "ModelPackageGroupName for a versioned one")
        doc = aws_names("CreateModelPackage", members)
        now = time.time()
        doc.update({"ModelPackageStatus": "Completed", "CreationTime": now,
                    "LastModifiedTime": now,
                    "ModelPackageStatusDetails": {"ValidationStatuses": [],
                                                  "ImageScanStatuses": []}})
        if group:
            doc = self._new_version(group, doc, members.get("model_approval_status"), tags)
            self._package_changed(doc)
        else:
            doc.pop("ModelApprovalStatus", None)
            arn = ModelPackage.arn(self.region, name)
            doc.update({"ModelPackageName": name, "ModelPackageArn": arn})
            self._create(ModelPackage, arn, doc,
                         validation(f"Model Package {arn} already exists."), tags)
        return {"ModelPackageArn": doc["ModelPackageArn"]}

    def _new_version(self, group, doc, approval, tags) -> dict:
        """The group's next version: numbered by the group's counter, created, never
        overwriting another."""
        with self.store.lock:
            if self.store.get(ModelPackageGroup.kind, group) is None:
                raise validation(f"Model Package Group {group} does not exist.")
            version = self.store.next_number(f"versions/{group}",
                                             lambda: self._highest_version(group))
        arn = ModelPackage.arn(self.region, f"{group}/{version}")
        doc.update({"ModelPackageGroupName": group, "ModelPackageVersion": version,
                    "ModelPackageName": group, "ModelPackageArn": arn,
                    "ModelApprovalStatus": approval or "PendingManualApproval"})
        return self._create(ModelPackage, arn, doc,
                            validation(f"Model Package {arn} already exists."), tags)

    def _highest_version(self, group) -> int:
        return max((p["ModelPackageVersion"] for p in self.store.list(ModelPackage.kind)
                    if p.get("ModelPackageGroupName") == group), default=0)

    def _package_changed(self, doc):
        """SageMaker's "Model Package State Change" event, as the registry emits it on AWS (on
        creation and on approval changes)."""
        self.outbox.put("aws.sagemaker", "SageMaker Model Package State Change",
                        [doc["ModelPackageArn"]], ModelPackage.describe(doc))

    def package(self, ref) -> dict:
        """A package's record: by ARN, or an unversioned package by its name."""
        if not ref.startswith("arn:"):
            doc = self.store.get(ModelPackage.kind, ModelPackage.arn(self.region, ref))
            if doc is not None and "ModelPackageGroupName" not in doc:
                return doc
        return self._get(ModelPackage, ref)

    def describe_model_package(self, model_package_name):
        return ModelPackage.describe(self.package(model_package_name))

    def list_model_packages(self, model_package_group_name=None, model_approval_status=None,
                            model_package_type=None, **query):
        # AWS's default type is Unversioned, but a group's packages are its versions
        kind = model_package_type or ("Versioned" if model_package_group_name else "Unversioned")
        docs = [p for p in self.store.list(ModelPackage.kind)
                if kind == "Both" or ("ModelPackageGroupName" in p) == (kind == "Versioned")]
        if model_package_group_name:
            docs = [p for p in docs if p.get("ModelPackageGroupName") == model_package_group_name]
        if model_approval_status:
            docs = [p for p in docs if p.get("ModelApprovalStatus") == model_approval_status]
        return list_answer(ModelPackage, docs, "ModelPackageName", **query)

    def update_model_package(self, model_package_arn, model_approval_status=None,
                             customer_metadata_properties=None,
                             customer_metadata_properties_to_remove=None,
                             additional_inference_specifications_to_add=None, client_token=None,
                             **members):
        """Approval; metadata merged key by key (and keys removed); inference specifications
        added to the existing ones; every other member (ApprovalDescription,
        InferenceSpecification, SourceUri, ...) replaced as given."""
        with self.store.lock:
            doc = self.package(model_package_arn)
            if model_approval_status and "ModelPackageGroupName" not in doc:
                raise validation("ModelApprovalStatus does not apply to unversioned model "
                                 "packages")
            changed = model_approval_status not in (None, doc.get("ModelApprovalStatus"))
            if model_approval_status is not None:
                doc["ModelApprovalStatus"] = model_approval_status
            if customer_metadata_properties or customer_metadata_properties_to_remove:
                properties = {**doc.get("CustomerMetadataProperties", {}),
                              **(customer_metadata_properties or {})}
                for key in customer_metadata_properties_to_remove or ():
                    properties.pop(key, None)
                doc["CustomerMetadataProperties"] = properties
            if additional_inference_specifications_to_add:
                doc["AdditionalInferenceSpecifications"] = _added_specifications(
                    doc.get("AdditionalInferenceSpecifications", []),
                    additional_inference_specifications_to_add)
            doc.update(aws_names("UpdateModelPackage", members))
            doc["LastModifiedTime"] = time.time()
            self.store.put(ModelPackage.kind, doc["ModelPackageArn"], doc)
        if changed:
            self._package_changed(doc)
        return {"ModelPackageArn": doc["ModelPackageArn"]}

    def delete_model_package(self, model_package_name):
        with self.store.lock:
            doc = self.package(model_package_name)
            self.store.delete(ModelPackage.kind, doc["ModelPackageArn"])
        return {}

    # ------------------------------------------------- the RegisterModel step
    def register_from_step(self, request: dict) -> dict:
        """A RegisterModel step: its arguments are a CreateModelPackage request; as Pipelines
        does, the step creates its group when there is none."""
        constraints.check(request, SERVICE_MODEL.operation_model("CreateModelPackage").input_shape)
        group = request.get("ModelPackageGroupName")
        with self.store.lock:
            if group and self.store.get(ModelPackageGroup.kind, group) is None:
                self.create_model_package_group(group)
        arn = self.create_model_package(**as_kwargs(request))["ModelPackageArn"]
        return self.describe_model_package(arn)


def _added_specifications(existing: list, added) -> list:
    specs = existing + list(added)
    if len(specs) > MAX_ADDITIONAL_SPECIFICATIONS:
        raise validation("Total number of additional Inference Specifications can "
                         f"not exceed {MAX_ADDITIONAL_SPECIFICATIONS} (this would make "
                         f"{len(specs)}).")
    names = [spec["Name"] for spec in specs]
    if len(set(names)) != len(names):
        raise validation("Additional Inference Specification names must be unique "
                         f"within a model package: {names}")
    return specs
