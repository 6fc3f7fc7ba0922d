"""convae: convolutional image autoencoders you can train, inspect and put to work."""

__version__ = "0.1.0"
