"""convae: convolutional image autoencoders you can train, inspect and put to work."""

import os as _os

# OpenMP threads spin-wait between parallel regions by default. On a machine whose cores
# are shared with other processes that turns a 2-thread training step 5–25× slower than
# 1 thread (benchmarks/results/threads.json); sleeping instead costs nothing measurable
# there and keeps all cores useful. It only takes effect when convae is imported before
# torch (the `convae` command always is); an explicit OMP_WAIT_POLICY wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
