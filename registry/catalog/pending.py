"""Packs being written (``pending_packs``): what tells gc a pack file is in flight.

Part of the one gateway (``gateway.Catalog``). A writer adds its row in a transaction
of its own, committed before the pack's first byte goes to the store; the
transaction that names the pack removes it (``BlobQueries.add_pack``), and finds it
gone if gc judged the writer dead and collected the pack meanwhile
(:class:`PackCollected`). Must never import torch, SQLAlchemy or anything above
``catalog``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from ..liveness import Writer
from .rows import Contention, Statements, chunks, marks, utc


class PackCollected(Contention):
    """The pack this write made was collected by gc, which judged its writer gone (a
    writer on another machine that outlived gc's grace period, or ``gc --grace 0``).
    Nothing names it; the writer starts over with a new pack."""

    def __init__(self, pack_id: str):
        super().__init__(
            f"pack {pack_id} was collected by a gc while it was being written "
            "(gc took its writer for gone); try again"
        )
        self.pack_id = pack_id


@dataclass(frozen=True)
class PendingPack:
    """A row of ``pending_packs``: which pack, written for what, by whom, since when."""

    pack_id: str
    purpose: str
    writer: Writer
    started_at: datetime


class PendingQueries(Statements):
    """Add, list and remove the rows of packs being written."""

    def add_pending(self, pack_id: str, purpose: str, writer: Writer) -> None:
        """Record that ``writer`` is about to write pack ``pack_id`` (own transaction)."""
        self.execute(
            "INSERT INTO pending_packs (pack_id, purpose, host, boot_id, pid_ns, pid, "
            "pid_started, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                pack_id,
                purpose,
                writer.host,
                writer.boot_id,
                writer.pid_ns,
                writer.pid,
                writer.pid_started,
                self.timestamp(),
            ),
        )

    def pending_packs(self) -> dict[str, PendingPack]:
        """Every pack being written, by id."""
        return {
            row[0]: PendingPack(row[0], row[1], Writer(*row[2:7]), utc(row[7]))
            for row in self.execute(
                "SELECT pack_id, purpose, host, boot_id, pid_ns, pid, pid_started, started_at "
                "FROM pending_packs"
            )
        }

    def take_pending(self, pack_id: str) -> bool:
        """Remove pack ``pack_id``'s row; whether it was there (inside a write
        transaction: on PostgreSQL the row stays locked until it ends)."""
        if self.sqlite:  # the write transaction holds the database's one write lock
            if not self.execute("SELECT 1 FROM pending_packs WHERE pack_id = ?", (pack_id,)):
                return False
            self.execute("DELETE FROM pending_packs WHERE pack_id = ?", (pack_id,))
            return True
        return bool(
            self.execute(
                "DELETE FROM pending_packs WHERE pack_id = ? RETURNING pack_id", (pack_id,)
            )
        )

    def drop_pending(self, pack_ids: Sequence[str]) -> None:
        """Remove the rows of ``pack_ids`` (gc, for writers gone; a writer giving up)."""
        for chunk in chunks(list(pack_ids)):
            self.execute(f"DELETE FROM pending_packs WHERE pack_id IN ({marks(len(chunk))})", chunk)
