"""The shared ``convae`` Typer app, its consoles and the small option parsers every verb uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from convae import __version__  # noqa: PLC0415

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


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    from convae.shapes import parse_size  # noqa: PLC0415

    if text is None:
        return None
    size = parse_size(text, what="--image-size")
    if len(size) == 1:
        return (size[0], size[0])
    if len(size) != 2:
        raise ConvaeError(f"--image-size {text!r} must be H or HxW")
    return (size[0], size[1])


def parse_classes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        classes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConvaeError(f"--normal-classes {text!r} must be class indices like 0,1,2") from None
    if not classes:
        raise ConvaeError("--normal-classes needs at least one class index")
    return classes


def read_toml(path: Path) -> dict[str, Any]:
    try:
        import tomllib  # noqa: PLC0415
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # noqa: PLC0415
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvaeError(f"{path}: config file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConvaeError(f"{path}: not valid TOML ({error})") from None
    return data.get("train", data)



def show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """Warnings (a skipped file, a converted image) as one plain line each."""
    err.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)

