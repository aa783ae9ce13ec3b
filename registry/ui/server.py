"""``serve``: bind the socket, settle the token, run the page under uvicorn.

The socket is bound here, before uvicorn starts, so a port in use is one line
(:class:`registry.errors.ConfigurationError`) and ``port=0`` picks a free port whose
address is printed.
"""

from __future__ import annotations

import gc
import ipaddress
import secrets
import socket
import threading
import webbrowser
from collections.abc import Callable

from .. import config
from ..errors import ConfigurationError
from .app import Settings, create_app


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) can be reached only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    allow_edits: bool = False,
    open_browser: bool = False,
    say: Callable[[str], None] = print,
) -> None:
    """Serve the web page until interrupted (Ctrl-C).

    Bound beyond loopback, every request needs a token: REGISTRY_UI_TOKEN, or one
    generated now and printed with the address. Raises ConfigurationError when the
    address cannot be bound (port in use, unknown host).
    """
    import uvicorn

    from ..api import Registry

    loopback = is_loopback(host)
    token = config.ui_token()
    if token is None and not loopback:
        token = secrets.token_urlsafe(24)
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    if host.strip("[]") in ("0.0.0.0", "::"):  # every address: name this machine
        shown = socket.gethostname()
    url = f"http://{shown}:{bound}/"
    address = url + (f"?token={token}" if token else "")
    settings = Settings(
        open_registry=Registry, allow_edits=allow_edits, token=token, loopback=loopback
    )
    Registry().close()  # a catalogue or store that cannot be opened fails now, in one line
    say(f"registry ui: serving {address}")
    say(
        "edits allowed (aliases, tags, descriptions)"
        if allow_edits
        else "read-only (--allow-edits to change)"
    )
    if not loopback:
        say(
            f"bound beyond loopback: every request needs the token (also as Authorization: Bearer {token})"
        )
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(address,)).start()
    # Everything imported so far lives as long as the server: out of the collector's
    # sight, a full collection no longer walks it (it cost ~90 ms once torch is in).
    gc.freeze()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", access_log=False, lifespan="off")
    )
    server.run(sockets=[sock])
