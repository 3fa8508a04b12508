"""Two or more executions side by side, the same rows on the compare page and in
``run_pipeline.py compare``: outcome, per-step durations (cache hits said as such), the gate's
values, failure reasons, packages and deployments, the parameters that differ, the metrics;
and training curves, one per training job (runs that reused one job share its curve)."""
from typing import Dict, List, Tuple

from pipeline.config import STEPS
from pipeline.review import deployments
from pipeline.review.runs import Execution, curves
from pipeline.review.text import accuracy_text, took

METRICS = ("accuracy", "weighted_precision", "weighted_recall", "weighted_f1")
Row = Tuple[str, List[str]]


def rows(runs: List[Execution]) -> List[Row]:
    table: List[Row] = [("display name", [r.display_name for r in runs]),
                        ("pipeline", [r.pipeline for r in runs]),
                        ("status", [r.status for r in runs]),
                        ("duration", [took(r.duration) for r in runs])]
    names = list(dict.fromkeys(n for r in runs for n in r.step_names))
    for name in names:
        table.append((f"step {name}", [_step_cell(r, name) for r in runs]))
    table.append(("gate", [_gate(r) for r in runs]))
    table.append(("failure", [r.failure for r in runs]))
    table.append(("package", [_package(r) for r in runs]))
    table.append(("deployment", ["; ".join(deployments.run_lines(r)) for r in runs]))
    parameters = list(dict.fromkeys(k for r in runs for k in r.parameters))
    for name in parameters:
        values = [r.parameters.get(name, "") for r in runs]
        if len(set(values)) > 1:
            table.append((name, values))
    for metric in METRICS:
        table.append((metric, [accuracy_text((r.metrics or {}).get(metric, {}).get("value"))
                               for r in runs]))
    return table


def _step_cell(run: Execution, name: str) -> str:
    step = run.step(name)
    if step is None:
        return "not run"
    if step.cache_source:
        return f"cache hit (of {step.cache_source.split('/')[-1]})"
    return f"{step.status} {took(step.duration)}".strip()


def _gate(run: Execution) -> str:
    check = run.step(STEPS.check)
    return check.condition[0] if check and check.condition else ""


def _package(run: Execution) -> str:
    if not run.package:
        return ""
    return f"v{run.package.get('ModelPackageVersion', '?')} {run.package['ModelApprovalStatus']}"


def training_series(sources, runs: List[Execution]) -> Dict[str, Dict[str, List[float]]]:
    """One curve per training job, labelled by the runs that used it."""
    by_job: Dict[str, List[str]] = {}
    for run in runs:
        if run.training and run.training.job_name:
            by_job.setdefault(run.training.job_name, []).append(run.id)
    series = {}
    for job, ids in by_job.items():
        try:
            found = curves(sources.job_log(job))
        except Exception:  # noqa: BLE001 - no log: no curve
            continue
        if found:
            series[" = ".join(ids)] = found
    return series
