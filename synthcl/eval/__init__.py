"""Evaluation of a run: linear and kNN probes on frozen backbone features, the label-efficiency and
transfer protocols, and the run report."""

from synthcl.eval.probes import extract_features, knn_accuracy, linear_probe
from synthcl.eval.protocols import evaluate_efficiency, evaluate_transfer
from synthcl.eval.report import write_report
from synthcl.eval.run import evaluate_run, load_run_backbone

__all__ = [
    "evaluate_efficiency",
    "evaluate_run",
    "evaluate_transfer",
    "extract_features",
    "knn_accuracy",
    "linear_probe",
    "load_run_backbone",
    "write_report",
]
