"""Export a run to ONNX with proven parity, and run exported files in place of the torch model."""

from convae.applications.export.onnx_file import TOLERANCE, Exported, export_run, seeded_images

__all__ = ["TOLERANCE", "Exported", "export_run", "seeded_images"]
