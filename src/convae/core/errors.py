"""User-fixable errors.

Everything a user can repair (a wrong path, a corrupt file, a bad flag value) raises
:class:`ConvaeError` with a one-line message; the CLI prints that line and exits with
code 2, so users never see a traceback for their own mistakes.
"""


class ConvaeError(Exception):
    """A problem the user can fix; the message is one line that names the culprit."""


class DataError(ConvaeError):
    """A dataset, image or data file cannot be read or is malformed."""


class RunError(ConvaeError):
    """A run directory is missing pieces, is locked, or does not match its config."""


class ModelError(ConvaeError):
    """A model preset or its arguments cannot produce a valid model for the input."""
