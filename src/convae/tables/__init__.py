"""What the shapes of a model look like to a reader: the layer table (layers.py) and the solver's report.

Above the models (it builds them), below the run and the CLI.
"""

from convae.tables.layers import LayerRow, ShapeTable, parse_input_shape, table_for_preset, trace
from convae.tables.solver_report import solve_report

__all__ = ["LayerRow", "ShapeTable", "parse_input_shape", "solve_report", "table_for_preset", "trace"]
