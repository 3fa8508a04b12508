"""The SageMaker backend of the local service, one module per API family, as moto splits its
backends: ``pipelines`` (pipelines and executions), ``registry`` (model package groups and
packages), ``hosting`` (models, endpoint configs, endpoints), ``jobs`` (training and
processing jobs), ``common.Tags`` and ``search.SearchApi``; ``listing`` lists, filters, sorts
and pages for all of them. ``records`` holds the internal verbs the workflow and hosting report
through.

Each operation is a keyword-argument method named as botocore names it
(``create_model(model_name=..., primary_container=...)``; nested members keep AWS's
spelling), returning the response dict and raising ``ServiceError``. ``SageMakerBackend``
answers every operation with the family that has it.
"""
from typing import Callable, Dict

import botocore

from pipeline.local.resources import SERVICE_MODEL

OPERATIONS = {botocore.xform_name(name) for name in SERVICE_MODEL.operation_names}


class SageMakerBackend:
    """The API families as one backend: ``backend.describe_endpoint(...)`` is the hosting
    family's. Every family is built before it, with its collaborators."""

    def __init__(self, region: str, *families):
        self.region = region
        self._operations: Dict[str, Callable] = {}
        for family in families:
            for name in OPERATIONS:
                method = getattr(family, name, None)
                if method is not None:
                    if name in self._operations:
                        raise ValueError(f"{name} is answered by two families")
                    self._operations[name] = method

    def __getattr__(self, name: str) -> Callable:
        method = self.__dict__.get("_operations", {}).get(name)
        if method is None:
            raise AttributeError(name)
        return method
