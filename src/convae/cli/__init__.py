"""The ``convae`` command. Every verb is a thin call into the library.

User-fixable problems arrive here as ConvaeError and leave as one line on stderr with
exit code 2; nothing a user typed should ever produce a traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

from convae.core.openmp import set_openmp_wait_policy

set_openmp_wait_policy()  # before anything imports torch

import typer  # noqa: E402

from convae.cli._app import app, err, out, show_warning  # noqa: E402
from convae.core.errors import ConvaeError  # noqa: E402

#: Importing a verb module registers its commands on ``app``; this order is the order of
#: ``convae --help``.
VERB_MODULES = ("runs", "shapes", "classify", "restore", "detect", "codes", "export", "zoo", "bench")
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
    command = typer.main.get_command(app)
    _name_arguments(command)
    try:
        code = command.main(args=sys.argv[1:], prog_name="convae", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.TyperException as error:  # usage errors: unknown flag, bad value, missing argument
        if type(error).__name__ == "NoArgsIsHelpError":  # `convae` or `convae classify` alone: the help
            print(error.format_message())
            sys.exit(0)
        err.print(f"error: {error.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Abort:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except ConvaeError as error:
        err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)
    except BrokenPipeError:  # `convae ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def _name_arguments(command: Any) -> None:
    """Show arguments as RUN_DIR, INPUTS... in usage lines and help (not {run_dir})."""
    for param in getattr(command, "params", []):
        if param.param_type_name == "argument" and not param.metavar:
            param.metavar = param.name.upper()
            usage = (param.metavar if param.required else f"[{param.metavar}]") + ("..." if param.nargs != 1 else "")
            param._usage_display_name = lambda usage=usage: usage  # typer would print {RUN_DIR}
    for sub in getattr(command, "commands", {}).values():
        _name_arguments(sub)


if __name__ == "__main__":
    main()
