"""The ``convae`` command. Every verb is a thin call into the library.

User-fixable problems arrive here as ConvaeError and leave as one line on stderr with
exit code 2; nothing a user typed should ever produce a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from convae.cli._app import app, err, out, show_warning
from convae.core.errors import ConvaeError

#: Importing a verb module registers its commands on ``app``; this order is the order of
#: ``convae --help``.
VERB_MODULES = ("runs", "shapes", "classify", "restore", "detect", "codes", "bench")
for _name in VERB_MODULES:
    importlib.import_module(f"convae.cli.{_name}")

__all__ = ["app", "err", "main", "out"]


def main() -> None:
    """Entry point: one clear line and exit code 2 for user errors."""
    warnings.showwarning = show_warning
    # File names that are not valid UTF-8 reach Python as surrogate escapes; print them
    # escaped (\udcff) instead of crashing on the line that names the bad file.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # pragma: no cover - a stream that cannot change
                pass
    try:
        app()
    except ConvaeError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
