"""The ``registry`` command: a thin click layer over :class:`registry.Registry`.

Results go to stdout (JSON with ``--json``); human messages go to stderr. A
:class:`RegistryError` becomes a one-line ``Error: ...`` and exit code 1; bad usage
exits with 2 (click's convention).

This package owns the command line only: what users type, which ``Registry`` method
each command calls, and how the answer is printed. What a command does belongs to
the API. Its modules, from the top down:

    __init__     the ``cli`` group with every command added; ``main``, the console script
    weights      push, pull
    organise     tag, untag, alias, describe, rm
    browse       list, models, show, diff, log
    maintenance  storage, gc, verify, db upgrade, db current
    ui           ui (the web page; registry.ui serves it)
    bundles      export, import, mirror
    cache        cache info, cache prune, cache clear
    archs        identify, archs
    app          the click group and command classes, errors -> one line, open_registry
    params       click parameter types (REF, NAME, K=V ...) and shared options
    output       JSON on stdout, messages on stderr, the progress bar

Nothing else in ``registry`` imports this package. It must never import torch,
SQLAlchemy or ``registry.api`` at module level: ``registry list``, ``show``, ``tag``
and the other catalogue-only commands load neither torch nor SQLAlchemy.
"""

from __future__ import annotations

from .app import cli
from .archs import archs, identify
from .browse import diff, list_, log, models, show
from .bundles import export, import_, mirror
from .cache import cache
from .maintenance import db, gc, storage, verify
from .organise import alias, describe, rm, tag, untag
from .ui import ui
from .weights import pull, push

for _command in (
    push, pull,
    list_, models, show, diff, log,
    tag, untag, alias, describe, rm,
    storage, gc, verify, db, cache,
    ui,
    export, import_, mirror,
    identify, archs,
):  # fmt: skip
    cli.add_command(_command)
del _command

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="registry")
