"""Writing a pack under its ``pending_packs`` row: what push and import share.

:func:`start_pending_pack` commits the row (``Gateway.hold_pack``) before the first
byte goes to the store, so gc leaves the pack alone while this process runs and
collects it once it is gone; :func:`wait_pending` waits for the pack to be durable,
turning a pack a gc took meanwhile into :class:`PackCollected` (a Contention: the
writer starts over); :func:`give_up` removes an uncommitted pack and its row. The
transaction that names the pack takes the row back (``Catalog.add_pack``). Must never
import ``api`` or ``cli``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..catalog.gateway import Gateway, PackCollected
from ..storage import PackMissing, PackWritten, Store, new_pack_id


def start_pending_pack(
    gateway: Gateway,
    store: Store,
    buffers: Sequence[memoryview],
    purpose: str,
    progress: Callable[[int], None] | None = None,
) -> PackWritten:
    """Record a new pack for ``purpose`` (``push``, ``import``), then start writing
    ``buffers`` as it (``Store.start_pack``); the row goes again if the start fails."""
    pack_id = new_pack_id()
    gateway.hold_pack(pack_id, purpose)
    try:
        return store.start_pack(buffers, progress, pack_id=pack_id)
    except BaseException:
        gateway.release_pack(pack_id)
        raise


def wait_pending(written: PackWritten) -> None:
    """Wait until ``written`` is durable; PackCollected if a gc took it before it was
    whole (a ``gc --grace 0`` that could not see this process)."""
    try:
        written.wait()
    except PackMissing:
        raise PackCollected(written.pack_id) from None


def give_up(gateway: Gateway, store: Store, written: PackWritten) -> None:
    """Remove a pack no committed row names, then its ``pending_packs`` row."""
    store.abandon(written)
    gateway.release_pack(written.pack_id)
