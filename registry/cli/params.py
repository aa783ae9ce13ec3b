"""What users type on the command line: click parameter types and shared options.

Owns the parameter types (REF, NAME, TAG ...), the ``K=V`` callback, and the options
several commands share (``--json``, ``--tag``). Each type checks its value with the same
torch-free validator the Python API uses (``refs``, ``keyvalue``) and turns an
:class:`InvalidArgumentError` into click's ``BadParameter``, so a bad value is a usage
error: exit code 2, click's usage line, and the option's name in the message, before
any work starts.

Must never import ``registry.api``, torch or SQLAlchemy (the validators are leaves,
imported when a value is checked), nor the command modules of this package.
"""

from __future__ import annotations

from typing import Any

import click

from ..errors import InvalidArgumentError


class _Checked(click.ParamType):
    """A string checked by :meth:`check`, which returns the converted value."""

    def check(self, value: str) -> Any:  # pragma: no cover - overridden
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.check(value)
        except InvalidArgumentError as exc:
            self.fail(exc.cli_message, param, ctx)


class RefType(_Checked):
    """NAME, NAME:VERSION, NAME:latest, NAME:ALIAS or NAME@sha256:HEX; kept as typed."""

    name = "REF"

    def check(self, value: str) -> str:
        from ..refs import parse_ref

        parse_ref(value)
        return value


class NameType(_Checked):
    name = "NAME"

    def check(self, value: str) -> str:
        from ..refs import validate_name

        return validate_name(value)


class NamePatternType(_Checked):
    """A model name, or a glob of one (``res*``)."""

    name = "NAME|GLOB"

    def check(self, value: str) -> str:
        from ..refs import validate_name

        validate_name(value.replace("*", "a").replace("?", "a"))
        return value


class AliasType(_Checked):
    name = "ALIAS"

    def check(self, value: str) -> str:
        from ..refs import validate_alias

        return validate_alias(value)


class TagType(_Checked):
    """``K=V`` -> ``(key, value)``."""

    name = "K=V"

    def check(self, value: str) -> tuple[str, str]:
        from ..keyvalue import parse_tags

        ((key, text),) = parse_tags([value]).items()
        return key, text


class TagKeyType(_Checked):
    name = "KEY"

    def check(self, value: str) -> str:
        from ..keyvalue import validate_tags

        validate_tags({value: ""})
        return value


class ArchArgType(_Checked):
    """``K=V`` -> ``(key, JSON value or string)``."""

    name = "K=V"

    def check(self, value: str) -> tuple[str, Any]:
        from ..keyvalue import parse_arch_args

        ((key, parsed),) = parse_arch_args([value]).items()
        return key, parsed


class DateType(_Checked):
    """An ISO 8601 date or time (UTC unless it says otherwise); kept as typed."""

    name = "DATE"

    def check(self, value: str) -> str:
        from ..keyvalue import parse_date

        parse_date(value, "date")
        return value


def pairs_to_dict(ctx: click.Context, param: click.Parameter, value: Any) -> dict[str, Any]:
    """Callback for a repeatable K=V option: a dict, refusing one key with two values."""
    from ..keyvalue import unique_pairs

    try:
        return unique_pairs(value or (), "key")
    except InvalidArgumentError as exc:
        raise click.BadParameter(exc.cli_message, ctx, param) from None


REF = RefType()
NAME = NameType()
NAME_PATTERN = NamePatternType()
ALIAS = AliasType()
TAG = TagType()
TAG_KEY = TagKeyType()
ARCH_ARG = ArchArgType()
DATE = DateType()

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout."
)


def tag_option(help: str) -> Any:
    """A repeatable ``--tag K=V`` option whose value is a dict (one value per key)."""
    return click.option("--tag", "tags", type=TAG, multiple=True, callback=pairs_to_dict, help=help)


def filter_options(subject: str) -> Any:
    """The filters ``list`` and ``models`` share: ``[NAME|GLOB]``, ``--tag``,
    ``--arch``, ``--since``, ``--before``; ``subject`` says what they select
    ("versions", or "models with a version")."""
    decorators = [
        click.argument("name", required=False, type=NAME_PATTERN, metavar="[NAME|GLOB]"),
        tag_option(f"Only {subject} with this tag; repeatable (ANDed)."),
        click.option("--arch", help=f"Only {subject} of this architecture."),
        click.option(
            "--since", type=DATE, help=f"Only {subject} created at or after DATE (ISO 8601, UTC)."
        ),
        click.option(
            "--before", type=DATE, help=f"Only {subject} created before DATE (ISO 8601, UTC)."
        ),
    ]

    def apply(command: Any) -> Any:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def page_options(noun: str) -> Any:
    """``--limit N`` (default 100, 0: all) and ``--offset N`` for a listing of ``noun``."""

    def apply(command: Any) -> Any:
        command = click.option(
            "--offset", type=click.IntRange(min=0), default=0, help="Skip the first N."
        )(command)
        return click.option(
            "--limit", type=click.IntRange(min=0), default=100, show_default=True,
            help=f"Show at most N {noun} (0: all).",
        )(command)  # fmt: skip

    return apply
