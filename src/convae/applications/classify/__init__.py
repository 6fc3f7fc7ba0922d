"""Classification: train and use the CNN classifiers, and probe what an autoencoder's code knows."""

from convae.applications.classify import report as _report  # noqa: F401 - registers the report section
from convae.applications.classify.evaluate import (
    class_scores,
    confusion_figure,
    confusion_text,
    evaluate_classifier,
    evaluate_model,
    load_classifier,
)
from convae.applications.classify.predict import load_image_for, predict_images
from convae.applications.classify.probe import probe_autoencoder, probe_text
from convae.applications.classify.task import ClassifyTask, shift_images, train_classifier
from convae.run.config import ClassifyConfig
from convae.run.splits import split_train_val

__all__ = [
    "ClassifyConfig", "ClassifyTask", "class_scores", "confusion_figure", "confusion_text", "evaluate_classifier",
    "evaluate_model", "load_classifier", "load_image_for", "predict_images", "probe_autoencoder", "probe_text", "shift_images",
    "split_train_val", "train_classifier",
]
