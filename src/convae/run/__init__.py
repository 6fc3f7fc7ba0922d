"""Runs: the run directory and the ``Run`` object every verb goes through (see run.py)."""

from convae.run.config import ClassifyConfig, TrainConfig, config_from_dict
from convae.run.files import (
    CONFIG,
    FIGURES,
    LOCK,
    METRICS,
    REPORT,
    STATE,
    WEIGHTS,
    check_state_dict,
    load_state,
    load_weights,
    read_config,
    read_metrics,
    require_run,
    save_weights,
    tensors_checksum,
)
from convae.run.run import AUTOENCODER, CLASSIFIER, Run, RunConfig, load_model, network_from_config
from convae.run.splits import Splits, split_train_val, split_validation

__all__ = [
    "AUTOENCODER", "CLASSIFIER", "CONFIG", "FIGURES", "LOCK", "METRICS", "REPORT", "STATE", "WEIGHTS",
    "ClassifyConfig", "Run", "RunConfig", "Splits", "TrainConfig", "check_state_dict", "config_from_dict",
    "load_model", "load_state", "load_weights", "network_from_config", "read_config", "read_metrics", "require_run", "save_weights",
    "split_train_val", "split_validation", "tensors_checksum",
]
