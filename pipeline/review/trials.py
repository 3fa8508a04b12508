"""A tuning job's trials, as every review shows them (the tuning-job page, the execution page,
``describe``, ``report``): each trial's tuned values, objective, status and duration, the best
one marked, and one chart of the objective against each tuned hyperparameter."""
import json
from dataclasses import dataclass, field
from typing import List, Optional

from pipeline.review import charts
from pipeline.review.sources import all_items, epoch


@dataclass
class Trial:
    name: str
    status: str
    values: dict  # hyperparameter -> value, as tuned (JSON text decoded)
    objective: Optional[float]
    seconds: Optional[float]
    best: bool = False


@dataclass
class Tuning:
    name: str
    status: str
    strategy: str
    metric: str
    scales: dict  # hyperparameter -> Linear / Logarithmic / ... / Categorical
    trials: List[Trial] = field(default_factory=list)

    @property
    def best(self) -> Optional[Trial]:
        return next((t for t in self.trials if t.best), None)

    def chart(self) -> Optional[str]:
        scored = [t for t in self.trials if t.objective is not None]
        if not scored:
            return None
        return charts.objective_by_parameter(
            self.metric, [(t.values, t.objective, t.best) for t in scored], self.scales)


def _value(text):
    try:
        return json.loads(text)  # categorical values of framework jobs are JSON text
    except (TypeError, ValueError):
        return text


def tuning(sm, name) -> Tuning:
    described = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    config = described["HyperParameterTuningJobConfig"]
    scales = {r["Name"]: r.get("ScalingType", "Linear") for kind in ("Integer", "Continuous")
              for r in config["ParameterRanges"].get(f"{kind}ParameterRanges", [])}
    scales.update({r["Name"]: "Categorical" for r in config["ParameterRanges"].get(
        "CategoricalParameterRanges", [])})
    best = described.get("BestTrainingJob", {}).get("TrainingJobName")
    summaries = all_items(sm.list_training_jobs_for_hyper_parameter_tuning_job,
                          "TrainingJobSummaries", HyperParameterTuningJobName=name,
                          SortBy="CreationTime", SortOrder="Ascending")
    trials = []
    for s in summaries:
        start, end = epoch(s.get("TrainingStartTime")), epoch(s.get("TrainingEndTime"))
        metric = s.get("FinalHyperParameterTuningJobObjectiveMetric")
        trials.append(Trial(s["TrainingJobName"], s["TrainingJobStatus"],
                            {k: _value(v) for k, v in s["TunedHyperParameters"].items()},
                            metric["Value"] if metric else None,
                            end - start if start and end else None,
                            s["TrainingJobName"] == best))
    return Tuning(name, described["HyperParameterTuningJobStatus"], config["Strategy"],
                  config["HyperParameterTuningJobObjective"]["MetricName"], scales, trials)


def lines(run: Tuning) -> List[str]:
    """The trials as ``describe`` prints them."""
    out = [f"tuning job {run.name}: {run.status}, {run.strategy}, {len(run.trials)} trials "
           f"for the best {run.metric}"]
    for t in run.trials:
        values = ", ".join(f"{k}={v}" for k, v in t.values.items())
        objective = f"{t.objective:.4f}" if t.objective is not None else "-"
        seconds = f"{t.seconds:.1f} s" if t.seconds is not None else "-"
        out.append(f"  {'*' if t.best else ' '} {t.name:<40} {t.status:<10} {objective:>7}  "
                   f"{seconds:>7}  {values}")
    return out
