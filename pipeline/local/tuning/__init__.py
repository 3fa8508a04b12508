"""Hyperparameter tuning in the local service: ``strategies`` (which hyperparameters each trial
gets: Random, Grid, Bayesian) and ``runner`` (the trials as training jobs, in parallel up to the
limit, the objective read from each one's final metrics); the API is ``backend.tuning``."""
