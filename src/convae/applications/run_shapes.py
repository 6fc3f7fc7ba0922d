"""``convae shapes RUN``: the layer table of the model a run directory describes.

Built from the run's config.json through :meth:`convae.run.Run.network`, so the table
shows exactly the trained network (its colour head included); weights are not needed.
"""

from __future__ import annotations

from pathlib import Path

from convae.run import Run
from convae.tables.layers import ShapeTable, trace


def table_for_run(run_dir: str | Path, input_shape: tuple[int, int, int] | None = None) -> ShapeTable:
    """The table of the model a run directory describes, at ``input_shape`` if given."""
    run = Run.open(run_dir, weights=False)
    shape = tuple(input_shape or run.config.input_shape)
    return trace(run.network(input_shape), shape, name=f"{run.config.model_name} ({run.path})")
