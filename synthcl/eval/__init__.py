"""Evaluation of a run: linear and kNN probes on frozen backbone features."""

from synthcl.eval.probes import extract_features, knn_accuracy, linear_probe
from synthcl.eval.run import evaluate_run, load_run_backbone

__all__ = ["evaluate_run", "load_run_backbone", "extract_features", "knn_accuracy", "linear_probe"]
