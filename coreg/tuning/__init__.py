"""Hyper-parameter tuning: per-method Optuna search spaces (``spaces``) and the study driver."""
