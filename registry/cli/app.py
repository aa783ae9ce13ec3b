"""The ``registry`` click group: its command classes, its errors, and the Registry it opens.

Owns :class:`Command` (refuses an option given twice), :class:`Group` (a
:class:`RegistryError`, an ``OSError`` or a database error becomes a one-line
``Error: ...`` with exit code 1), the top-level ``cli`` group with its help and
``--version``, and :func:`open_registry`, the one place a command gets its
:class:`registry.Registry`.

Must never import the command modules of this package (they import it), nor at module
level ``registry.api``, torch or SQLAlchemy: catalogue-only commands must load none of
them, so ``open_registry`` imports the API when called and SQLAlchemy's errors are
looked up in ``sys.modules`` only.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from .._format import printable
from ..errors import RegistryError

if TYPE_CHECKING:
    from ..api import Registry


class Command(click.Command):
    """A command that refuses an option given twice where it takes one value: click
    would keep the last and drop the other without a word."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            _, _, order = self.make_parser(ctx).parse_args(args=list(args))
        except click.UsageError:
            return super().parse_args(ctx, args)  # click says what is wrong
        seen: set[str | None] = set()
        for param in order:
            if isinstance(param, click.Option) and not (
                param.multiple or param.count or param.is_flag
            ):
                if param.name in seen:
                    raise click.BadParameter(
                        "given more than once: give it once", ctx=ctx, param=param
                    )
                seen.add(param.name)
        return super().parse_args(ctx, args)


class Group(click.Group):
    """Turns registry and database errors into one-line messages with exit code 1."""

    command_class = Command
    group_class = type  # subgroups (`registry db`) are of this class too

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RegistryError as exc:
            raise click.ClickException(printable(one_line(exc.cli_message))) from None
        except OSError as exc:
            raise click.ClickException(
                printable(one_line(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")))
            ) from None
        except Exception as exc:
            # Only a command that went through SQLAlchemy can raise its errors; checking
            # sys.modules keeps the others from importing it just to catch nothing.
            sa_exc = sys.modules.get("sqlalchemy.exc")
            if sa_exc is not None and isinstance(exc, sa_exc.SQLAlchemyError):
                detail = one_line(str(getattr(exc, "orig", None) or exc)).split("; ")[0]
                raise click.ClickException(
                    printable(f"catalogue database error: {detail}")
                ) from None
            raise


def one_line(message: str) -> str:
    """A message on one line, whatever the library that wrote it put in it."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def open_registry(**settings: str | None) -> Registry:
    """The Registry the environment names (or ``home=``, ``database_url=``,
    ``storage_url=`` override); the API is imported only when a command runs."""
    from ..api import Registry

    return Registry(**settings)  # type: ignore[arg-type]


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="registry", prog_name="registry")
def cli() -> None:
    """A model registry for PyTorch state dicts.

    Keeps every pushed state dict with its architecture, arguments, digest and tags
    (catalogue: REGISTRY_HOME or REGISTRY_DATABASE_URL) and rebuilds the module on
    load. REF is NAME, NAME:VERSION, NAME:latest, NAME:ALIAS or NAME@sha256:HEX.
    """
