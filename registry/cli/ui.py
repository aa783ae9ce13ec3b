"""``registry ui``: serve the web page (``registry.ui``) until Ctrl-C.

Owns the command's options only; the page is ``registry.ui``'s. Imports it (and so
Starlette, Jinja2 and uvicorn) only when the command runs.
"""

from __future__ import annotations

import click

from .app import Command
from .output import say


@click.command(cls=Command)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; beyond loopback every request needs a token "
              "(REGISTRY_UI_TOKEN, or one generated and printed).")  # fmt: skip
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port (0: a free one, printed).")  # fmt: skip
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option("--allow-edits", is_flag=True,
              help="Let the page set aliases, tags and descriptions (recorded in the history).")  # fmt: skip
def ui(host: str, port: int, open_browser: bool, allow_edits: bool) -> None:
    """Serve a web page to browse, compare and (with --allow-edits) organise versions."""
    from ..ui import serve

    serve(host, port, allow_edits=allow_edits, open_browser=open_browser, say=say)
