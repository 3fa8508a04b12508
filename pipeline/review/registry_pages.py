"""The registry and the endpoints as a reviewer reads them: every version with its test
accuracy, source run and where it is live; one version with its approval history, artifact and
where and when it served; two versions compared; each endpoint with what it serves, since when,
and its deployments. State-changing buttons lead to a confirmation page (``confirm_page``)."""
from typing import Dict, List

from markupsafe import Markup

from pipeline.review import charts
from pipeline.review.deployments import Live, live_endpoints
from pipeline.review.pages import metrics_view, render
from pipeline.review.runs import package_accuracy, package_metrics
from pipeline.review.sources import Sources, all_items
from steps import approvals


def package_title(p) -> str:
    """A version as "GROUP vN"; an unversioned package by its name."""
    if "ModelPackageGroupName" in p:
        return f"{p['ModelPackageGroupName']} v{p.get('ModelPackageVersion', '')}"
    return p["ModelPackageName"]


def _live_on(live: Dict[str, Live], arn: str) -> List[Live]:
    return [endpoint for endpoint in live.values() if endpoint.package == arn]


def packages_page(sources: Sources) -> bytes:
    sm, live = sources.sagemaker, live_endpoints(sources)
    rows = []
    for summary in all_items(sm.list_model_packages, "ModelPackageSummaryList",
                             ModelPackageType="Both", SortBy="CreationTime",
                             SortOrder="Descending"):
        p = sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
        rows.append({"p": p, "title": package_title(p),
                     "accuracy": package_accuracy(sources, p),
                     "source": p.get("CustomerMetadataProperties", {}).get(
                         "PipelineExecutionArn", ""),
                     "live": _live_on(live, p["ModelPackageArn"])})
    warnings = [f"{e.endpoint} is {e.warning}" for e in live.values() if e.warning]
    return render("packages.html", "Model registry", packages=rows, warnings=warnings)


def package_page(sources: Sources, arn: str, message: str = "") -> bytes:
    sm = sources.sagemaker
    p = sm.describe_model_package(ModelPackageName=arn)
    live = live_endpoints(sources)
    served = [d for endpoint in live.values() for d in endpoint.deployments
              if d.package == arn and d.action == "deployed"]
    container = (p.get("InferenceSpecification", {}).get("Containers") or [{}])[0]
    others = [q for q in all_items(sm.list_model_packages, "ModelPackageSummaryList",
                                   ModelPackageGroupName=p["ModelPackageGroupName"])
              if q["ModelPackageArn"] != arn] if "ModelPackageGroupName" in p else []
    return render("package.html", f"Model package {package_title(p)}", p=p, message=message,
                  lineage=sorted((k, v) for k, v in p.get("CustomerMetadataProperties",
                                                          {}).items()
                                 if not k.startswith(approvals.HISTORY_PREFIX)),
                  history=approvals.history(p), container=container, served=served,
                  live=_live_on(live, arn), others=others,
                  metrics=metrics_view(package_metrics(sources, p)))


def package_compare_page(sources: Sources, arn_a: str, arn_b: str) -> bytes:
    """Two versions side by side: their metrics and confusion matrices."""
    sm = sources.sagemaker
    sides = []
    for arn in (arn_a, arn_b):
        p = sm.describe_model_package(ModelPackageName=arn)
        metrics = package_metrics(sources, p) or {}
        sides.append({"p": p, "title": package_title(p), "metrics": metrics,
                      "confusion": Markup(charts.confusion_matrix(metrics["confusion_matrix"]))
                      if "confusion_matrix" in metrics else None})
    names = [n for n in sides[0]["metrics"] if isinstance(sides[0]["metrics"][n], dict)
             and "value" in sides[0]["metrics"][n]]
    rows = [(n, *(s["metrics"].get(n, {}).get("value") for s in sides)) for n in names]
    return render("package_compare.html", f"Compare {sides[0]['title']} and "
                  f"{sides[1]['title']}", sides=sides, rows=rows)


def endpoints_page(sources: Sources) -> bytes:
    sm = sources.sagemaker
    endpoints = []
    for name, live in live_endpoints(sources).items():
        desc = sm.describe_endpoint(EndpointName=name)
        endpoints.append({"name": name, "desc": desc, "live": live})
    return render("endpoints.html", "Endpoints", endpoints=endpoints,
                  live=any(e["desc"]["EndpointStatus"] in ("Creating", "Updating")
                           for e in endpoints))


def confirm_page(title: str, question: str, action: str, fields: Dict[str, str],
                 button: str, comment: bool = False, back: str = "/") -> bytes:
    """"Are you sure?" for a state-changing button: the form that really posts, with its
    fields (the CSRF token among them) and, for approvals, a comment box."""
    return render("confirm.html", title, question=question, action=action, fields=fields,
                  button=button, comment=comment, back=back)
