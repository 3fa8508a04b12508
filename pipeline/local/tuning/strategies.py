"""Which hyperparameters each trial of a tuning job gets, as SageMaker's strategies choose them:
``Random`` (each range sampled on its scale), ``Grid`` (every combination of categorical values,
in order) and ``Bayesian`` (Optuna's tree-structured Parzen estimator: a kept Bayesian
optimiser, asked for a trial and told its objective). Ranges are the request's
``ParameterRanges``; values are strings, as training jobs receive hyperparameters."""
import itertools
import math
import random

import optuna

from pipeline.local.errors import validation

STRATEGIES = ("Bayesian", "Random", "Grid")


class Range:
    """One tuned hyperparameter: its kind (Integer, Continuous, Categorical), bounds or values,
    and scale (Linear, Logarithmic, ReverseLogarithmic; Auto is taken as Linear)."""

    def __init__(self, kind, spec):
        self.kind, self.name = kind, spec["Name"]
        self.values = list(spec.get("Values", []))
        self.scale = spec.get("ScalingType", "Auto")
        if kind == "Categorical":
            if not self.values:
                raise validation(f"The categorical range {self.name} has no values.")
            return
        number = int if kind == "Integer" else float
        try:
            self.low, self.high = number(spec["MinValue"]), number(spec["MaxValue"])
        except (KeyError, ValueError):
            raise validation(f"The range {self.name} needs MinValue and MaxValue that are "
                             f"{kind.lower()} numbers.") from None
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low > self.high:
            raise validation(f"The range {self.name}: MinValue must not exceed MaxValue.")
        if self.scale == "Logarithmic" and self.low <= 0:
            raise validation(f"The range {self.name} is Logarithmic: its MinValue must be "
                             "greater than 0.")
        if self.scale == "ReverseLogarithmic" and (kind == "Integer" or self.low < 0
                                                   or self.high >= 1):
            raise validation(f"The range {self.name} is ReverseLogarithmic: it must be "
                             "continuous, within [0, 1).")

    def sample(self, rng: random.Random) -> str:
        if self.kind == "Categorical":
            return rng.choice(self.values)
        if self.scale == "Logarithmic":
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        elif self.scale == "ReverseLogarithmic":
            value = 1 - math.exp(rng.uniform(math.log(1 - self.high), math.log(1 - self.low)))
        else:
            value = rng.uniform(self.low, self.high)
        return self.text(value)

    def text(self, value) -> str:
        if self.kind == "Integer":
            return str(min(self.high, max(self.low, int(round(value)))))
        return f"{min(self.high, max(self.low, value)):.6g}"

    def distribution(self):
        """The range as Optuna's search space."""
        if self.kind == "Categorical":
            return optuna.distributions.CategoricalDistribution(self.values)
        log = self.scale == "Logarithmic"
        if self.kind == "Integer":
            return optuna.distributions.IntDistribution(self.low, self.high, log=log)
        return optuna.distributions.FloatDistribution(self.low, self.high, log=log)


def ranges_of(parameter_ranges: dict):
    ranges = [Range(kind, spec) for kind in ("Integer", "Continuous", "Categorical")
              for spec in parameter_ranges.get(f"{kind}ParameterRanges", [])]
    names = [r.name for r in ranges]
    if not ranges:
        raise validation("ParameterRanges must name at least one hyperparameter to tune.")
    if len(set(names)) != len(names):
        raise validation("A hyperparameter appears in more than one range.")
    return ranges


class RandomSearch:
    """Each trial samples every range anew (seeded: a rerun proposes the same trials)."""

    def __init__(self, ranges, maximize, seed):
        self.ranges, self.rng = ranges, random.Random(seed)

    def propose(self) -> dict:
        return {r.name: r.sample(self.rng) for r in self.ranges}

    def tell(self, proposed, value):
        """(Random search learns nothing from results.)"""

    def size(self):
        return None  # unbounded


class GridSearch:
    """Every combination of the categorical values, in the order the ranges list them."""

    def __init__(self, ranges, maximize, seed):
        if any(r.kind != "Categorical" for r in ranges):
            raise validation("The Grid strategy tunes categorical ranges only: give the "
                             "values to try for every hyperparameter.")
        self.ranges = ranges
        self._combinations = itertools.product(*(r.values for r in ranges))

    def propose(self):
        values = next(self._combinations, None)
        return None if values is None else dict(zip((r.name for r in self.ranges), values))

    def tell(self, proposed, value):
        """(A grid is fixed in advance.)"""

    def size(self):
        return math.prod(len(r.values) for r in self.ranges)


class BayesianSearch:
    """Optuna's TPE sampler, seeded; told each trial's objective as it ends (a failed trial
    is told it failed, so the model learns to avoid it)."""

    def __init__(self, ranges, maximize, seed):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.ranges = ranges
        self.study = optuna.create_study(
            direction="maximize" if maximize else "minimize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
        self._trials = {}  # id(proposed) -> the study's trial

    def propose(self):
        trial = self.study.ask({r.name: r.distribution() for r in self.ranges})
        proposed = {r.name: (trial.params[r.name] if r.kind == "Categorical"
                             else r.text(trial.params[r.name])) for r in self.ranges}
        self._trials[id(proposed)] = (trial, proposed)
        return proposed

    def tell(self, proposed, value):
        trial, _ = self._trials.pop(id(proposed))
        if value is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    def size(self):
        return None


def strategy(name, parameter_ranges, maximize, seed=0):
    """The strategy ``name`` over the request's ParameterRanges (refused if it is not one this
    service runs, or the ranges do not suit it)."""
    kinds = {"Random": RandomSearch, "Grid": GridSearch, "Bayesian": BayesianSearch}
    if name not in kinds:
        raise validation(f"The {name} strategy is not run by the local service: use one of "
                         f"{', '.join(STRATEGIES)}.")
    return kinds[name](ranges_of(parameter_ranges), maximize, seed)
