"""The shared ``convae`` Typer app, its consoles and the small option parsers every verb uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import typer
from rich.console import Console

from convae.core.errors import ConvaeError

#: Plain help (no boxes, no <bool>), -h as well as --help, one style for every verb.
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
app = typer.Typer(
    name="convae",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)
#: Output to a pipe or file is never wrapped: tables stay valid markdown, paths stay whole.
#: emoji=False: a user's text such as "rd:x:" or a file named ":smile:.png" is printed as it is, never as an emoji.
out = Console(soft_wrap=True, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)


def _version(value: bool) -> None:
    if value:
        from convae import __version__

        print(f"convae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="print the version and exit", callback=_version,
                                 is_eager=True),
) -> None:
    """Train, evaluate and inspect convolutional image autoencoders.

    \b
    Start with:  convae train --report          (the default autoencoder, evaluated, with a report)
    Then:        convae evaluate RUN | show RUN | detect RUN IMAGES... | reconstruct RUN IMAGES... --out DIR
    Each verb:   convae VERB -h
    """


def data_dir_option() -> Any:
    return typer.Option(None, "--data-dir", help="where the run's data is now (a folder holding MNIST/, "
                        "FashionMNIST/, CIFAR10-png/; default: where it was when the run was trained)")


def engine_option() -> Any:
    return typer.Option(None, "--engine", help="torch (default) or onnx: run the exported --onnx file with onnxruntime")


def onnx_option() -> Any:
    return typer.Option(None, "--onnx", help="an .onnx file made from this run by `convae export` (implies --engine onnx)")


def open_run(path: Path, kind: str | None = None, verb: str = "", *, data_dir: Path | None = None,
             dataset: str | None = None, weights: bool = True) -> Any:
    """The run at ``path`` (of ``kind``), reading its data from ``data_dir``/``dataset`` when given."""
    from convae.run import Run

    return Run.open(path, kind=kind, verb=verb, data_dir=data_dir, dataset=dataset, weights=weights)


def parse_classes(text: str | None) -> list[int | str] | None:
    """``0,2`` or ``cat,dog`` (or both): indices stay numbers, names are matched to the data's classes later."""
    from convae.run.fields import Field

    return None if text is None else Field("classes").check(text, "--normal-classes")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table: drawn for a terminal, valid markdown when stdout is a pipe or a file (never wrapped)."""
    if out.is_terminal:
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column)  # wraps between words, never inside one
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    print(f"{title}\n")
    print("| " + " | ".join(map(cell, columns)) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(map(cell, row)) + " |")
    print()


def fail_files(failed: Sequence[tuple[str, str]], total: int, rest: str) -> None:
    """One ``error:`` line per file that failed, then one summary line (exit 2) if any did."""
    for path, reason in failed:
        err.print(f"error: {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if failed:
        raise ConvaeError(f"{len(failed)} of {total} file(s) could not be read; {rest}")


def shown(name: object) -> str:
    """A file name as one printable line: control characters (a newline in a name) escaped, as Python
    writes them, so each result stays on its own line when piped."""
    text = str(name)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def plural(count: int, noun: str) -> str:
    """``1 image``, ``2 images``: counts in messages read right."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def note(text: str) -> None:
    """A plain line on stdout (dimmed on a terminal), never wrapped or marked up."""
    out.print(text, style="dim", markup=False, highlight=False)


def show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings (a skipped file, a converted image) as one plain line each."""
    err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

