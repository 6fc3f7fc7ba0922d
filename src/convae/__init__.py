"""convae: convolutional image autoencoders you can train, inspect and put to work.

Importing the package does nothing but name its version: the torch-free deployment runtime
(convae.runtime) must stay cheap to import. The OpenMP wait policy is chosen by the
``convae`` command and the training package (convae.core.openmp).
"""

__version__ = "0.1.0"
