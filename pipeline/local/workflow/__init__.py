"""Running a stored pipeline definition: ``graph`` (steps and their order), ``expressions``
(Get, Std:Join, Std:JsonGet, conditions), ``handlers`` (what each step type does) and
``orchestrator`` (run, stop, retry)."""
