"""Declarative experiments: `ExperimentConfig` in, append-only results out, resumable at any point."""

from .config import ExperimentConfig
from .methods import MethodSpec, expand_methods
from .runner import ExperimentRunner

__all__ = ["ExperimentConfig", "ExperimentRunner", "MethodSpec", "expand_methods"]
