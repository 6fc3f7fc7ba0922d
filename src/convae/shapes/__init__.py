"""Output-size arithmetic and the ConvTranspose2d solver (arithmetic.py); layer tables (table.py).

Only the arithmetic is re-exported here: the models import it, and table.py imports the
models, so importing the table from this face would make a circle.
"""

from convae.shapes.arithmetic import *  # noqa: F403
from convae.shapes.arithmetic import __all__  # noqa: F401
