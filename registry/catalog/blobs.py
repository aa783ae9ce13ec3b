"""The store's index in the catalogue: packs, blobs and where each tensor's bytes are.

Part of the one gateway (``gateway.Catalog``). A *blob* is one tensor's bytes, keyed
by their sha256, at (pack, offset, nbytes), with an XXH3-128 ``checksum`` that push
uses to find candidate duplicates and load to check bytes cheaply. Must never import
torch, SQLAlchemy or anything above ``catalog``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..records import Shared, TensorInfo
from ..sharing import from_columns
from .pending import PackCollected, PendingQueries
from .rows import Location, StoredBlob, chunks, marks, parse_json

#: Orders of ``tensor_page``: state-dict order, name, dtype, shape (rank, then
#: dimensions), size in bytes.
TENSOR_SORTS = ("position", "name", "dtype", "shape", "size")


def _shape_and_sharing(
    shapes: dict[Any, list[int]], shape: Any, group: int | None, view: Any
) -> tuple[list[int], Shared | None]:
    """A tensor row's shape and storage sharing, as the columns hold them: each
    distinct shape parsed once (``shapes`` remembers them; a model repeats a few), the
    storage view only for a key that shares its storage."""
    key = shape if isinstance(shape, str) else tuple(shape)
    dims = shapes.get(key)
    if dims is None:
        dims = shapes[key] = parse_json(shape)
    return dims, None if group is None else from_columns(group, parse_json(view), dims)


class BlobQueries(PendingQueries):
    """Tensors of a version, blobs and packs (and the packs being written)."""

    # -- a version's tensors ------------------------------------------------------

    def tensor_infos(self, version_id: int) -> tuple[TensorInfo, ...]:
        """The version's tensor table in state-dict order. Reads ``tensors`` alone (where
        the bytes are is ``tensor_locations``') and parses each distinct shape once:
        40,000 rows in about 0.1 s (benchmarks/ui.py)."""
        shapes: dict[Any, list[int]] = {}
        found = []
        for name, dtype, shape, digest, nbytes, group, view in self.execute(
            "SELECT name, dtype, shape, digest, nbytes, storage_group, storage_view "
            "FROM tensors WHERE version_id = ? ORDER BY position",
            (version_id,),
        ):
            dims, shared = _shape_and_sharing(shapes, shape, group, view)
            found.append(TensorInfo(name, dtype, tuple(dims), digest, int(nbytes), shared))
        return tuple(found)

    def tensor_locations(self, version_id: int) -> list[Location]:
        """The version's tensors in state-dict order, each with where its bytes are."""
        shapes: dict[Any, list[int]] = {}
        found = []
        for (
            name,
            dtype,
            shape,
            digest,
            nbytes,
            pack_id,
            offset,
            checksum,
            group,
            view,
        ) in self.execute(
            'SELECT t.name, t.dtype, t.shape, t.digest, b.nbytes, b.pack_id, b."offset", '
            "b.checksum, t.storage_group, t.storage_view FROM tensors t "
            "JOIN blobs b ON b.digest = t.digest WHERE t.version_id = ? ORDER BY t.position",
            (version_id,),
        ):
            dims, shared = _shape_and_sharing(shapes, shape, group, view)
            found.append(
                Location(name, dtype, list(dims), digest, nbytes, pack_id, offset, checksum, shared)
            )
        return found

    def tensor_page(
        self,
        version_id: int,
        contains: str | None = None,
        sort: str = "position",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[int, list[tuple[int, TensorInfo, str | None]]]:
        """One page of a version's tensor table, filtered and sorted in the database:
        (how many tensors match, [(position, tensor, the name of the key whose storage
        it shares, if another's)]). ``contains`` is a case-insensitive substring of the
        name (ASCII case on SQLite); ``sort`` one of TENSOR_SORTS. Only the page's rows
        are parsed: a page of a 40,000-tensor version costs a few milliseconds."""
        where, params = "t.version_id = ?", [version_id]
        if contains:
            escaped = "".join("!" + c if c in "%_!" else c for c in contains.lower())
            where += " AND LOWER(t.name) LIKE ? ESCAPE '!'"
            params.append(f"%{escaped}%")
        (matching,) = self.execute(f"SELECT COUNT(*) FROM tensors t WHERE {where}", params)[0]
        columns = "t.position, t.name, t.dtype, t.shape, t.digest, t.nbytes, t.storage_group, t.storage_view"
        if sort == "shape":  # by rank, then dimensions: not an order SQL has for JSON text
            shape_rows = self.execute(
                f"SELECT t.position, t.shape FROM tensors t WHERE {where}", params
            )
            keyed = sorted((len(d), d, p) for p, d in ((p, parse_json(s)) for p, s in shape_rows))
            if descending:
                keyed.reverse()
            end = None if limit is None else offset + limit
            chosen = [p for _, _, p in keyed[offset:end]]
            rank = {p: i for i, p in enumerate(chosen)}
            rows = sorted(
                (
                    row
                    for chunk in chunks(chosen)
                    for row in self.execute(
                        f"SELECT {columns} FROM tensors t WHERE t.version_id = ? "
                        f"AND t.position IN ({marks(len(chunk))})",
                        [version_id, *chunk],
                    )
                ),
                key=lambda row: rank[row[0]],
            )
        else:
            term = {
                "position": "t.position",
                "name": "t.name",
                "dtype": "t.dtype",
                "size": "t.nbytes",
            }[sort]
            way = " DESC" if descending else ""
            order = f"{term}{way}" + (f", t.position{way}" if sort != "position" else "")
            sql = f"SELECT {columns} FROM tensors t WHERE {where} ORDER BY {order}"
            if limit is not None or offset:
                sql += " LIMIT ? OFFSET ?"
                params = [*params, -1 if limit is None and self.sqlite else limit, offset]
            rows = self.execute(sql, params)
        groups = sorted({g for *_, g, _ in rows if g is not None})
        owners: dict[int, str] = {}
        for chunk in chunks(groups):
            owners.update(
                self.execute(
                    "SELECT position, name FROM tensors WHERE version_id = ? "
                    f"AND position IN ({marks(len(chunk))})",
                    [version_id, *chunk],
                )
            )
        page, shapes = [], {}
        for position, name, dtype, shape, digest, nbytes, group, view in rows:
            dims, shared = _shape_and_sharing(shapes, shape, group, view)
            info = TensorInfo(name, dtype, tuple(dims), digest, int(nbytes), shared)
            owner = owners.get(group) if group is not None else None
            page.append((int(position), info, owner if owner != name else None))
        return int(matching), page

    def version_metadata(self, version_id: int) -> tuple[Any, Any, Any]:
        """(state_metadata, file_metadata, assumed_metadata) of a version, parsed JSON."""
        rows = self.execute(
            "SELECT state_metadata, file_metadata, assumed_metadata FROM versions WHERE id = ?",
            (version_id,),
        )
        return tuple(parse_json(v) for v in rows[0]) if rows else (None, None, None)  # type: ignore[return-value]

    def users_of(self, digests: Sequence[str]) -> dict[str, list[str]]:
        """``name:version tensor`` for every use of each digest."""
        found: dict[str, list[str]] = {d: [] for d in digests}
        for chunk in chunks(list(digests)):
            for digest, name, number, tensor in self.execute(
                "SELECT t.digest, m.name, v.version, t.name FROM tensors t "
                "JOIN versions v ON v.id = t.version_id JOIN models m ON m.id = v.model_id "
                f"WHERE t.digest IN ({marks(len(chunk))}) ORDER BY m.name, v.version, t.position",
                chunk,
            ):
                found[digest].append(f"{name}:{number} {tensor}")
        return found

    # -- what is stored -----------------------------------------------------------

    def blobs_by_checksum(self, checksums: Iterable[str]) -> dict[str, list[StoredBlob]]:
        """Stored blobs whose checksum is one of ``checksums``: candidates, not proof."""
        found: dict[str, list[StoredBlob]] = {}
        for chunk in chunks(sorted(set(checksums))):
            for row in self.execute(
                'SELECT digest, pack_id, "offset", nbytes, checksum FROM blobs '
                f"WHERE checksum IN ({marks(len(chunk))})",
                chunk,
            ):
                found.setdefault(row[4], []).append(StoredBlob(*row[:4]))
        return found

    def known_digests(self, digests: Sequence[str]) -> set[str]:
        """Which of ``digests`` are stored."""
        found: set[str] = set()
        for chunk in chunks(list(digests)):
            found.update(
                d
                for (d,) in self.execute(
                    f"SELECT digest FROM blobs WHERE digest IN ({marks(len(chunk))})", chunk
                )
            )
        return found

    def all_blobs(self) -> list[tuple[StoredBlob, str | None]]:
        """Every stored blob with its checksum, pack by pack in file order."""
        return [
            (StoredBlob(d, p, o, n), c)
            for d, p, o, n, c in self.execute(
                'SELECT digest, pack_id, "offset", nbytes, checksum FROM blobs '
                'ORDER BY pack_id, "offset"'
            )
        ]

    def blobs_without_checksum(self) -> list[StoredBlob]:
        """Blobs stored before checksums existed (schema revision 0001), pack by pack."""
        return [
            StoredBlob(*row)
            for row in self.execute(
                'SELECT digest, pack_id, "offset", nbytes FROM blobs WHERE checksum IS NULL '
                'ORDER BY pack_id, "offset"'
            )
        ]

    def locate_blobs(self, digests: Sequence[str]) -> dict[str, tuple[StoredBlob, str | None]]:
        """Where each of ``digests`` is stored now, with its checksum (absent: not stored)."""
        found: dict[str, tuple[StoredBlob, str | None]] = {}
        for chunk in chunks(sorted(set(digests))):
            for d, p, o, n, c in self.execute(
                'SELECT digest, pack_id, "offset", nbytes, checksum FROM blobs '
                f"WHERE digest IN ({marks(len(chunk))})",
                chunk,
            ):
                found[d] = (StoredBlob(d, p, o, n), c)
        return found

    def live_digests(self) -> set[str]:
        """Digests some version's tensor uses."""
        return {d for (d,) in self.execute("SELECT DISTINCT digest FROM tensors")}

    def storage_totals(self) -> tuple[int, int, int, int]:
        """(bytes of every version's tensors, counted per version; bytes of the distinct
        tensors some version uses, each once; bytes of the packs the catalogue names,
        tensors no version uses any more included until gc; number of packs)."""
        (logical,) = self.execute("SELECT COALESCE(SUM(total_bytes), 0) FROM versions")[0]
        (unique,) = self.execute(
            "SELECT COALESCE(SUM(b.nbytes), 0) FROM blobs b "
            "WHERE EXISTS (SELECT 1 FROM tensors t WHERE t.digest = b.digest)"
        )[0]
        stored, count = self.execute("SELECT COALESCE(SUM(nbytes), 0), COUNT(*) FROM packs")[0]
        return int(logical), int(unique), int(stored), int(count)

    def packs(self) -> dict[str, int]:
        """Every pack the catalogue names, with its size in bytes."""
        return {p: int(n) for p, n in self.execute("SELECT id, nbytes FROM packs")}

    # -- recording (inside a write transaction) -------------------------------------

    def lock_for_gc(self) -> None:
        """Make writers of packs, blobs and tensor rows wait until this transaction ends,
        so that what gc finds used cannot change before it commits.

        The first statement of gc's write transaction. SQLite's write transaction holds
        the database's one write lock already (nothing to do). On PostgreSQL, where
        writes run side by side at READ COMMITTED, a push could otherwise commit a
        version naming a stored tensor gc has just found unused and is deleting. SHARE
        ROW EXCLUSIVE conflicts with the ROW EXCLUSIVE lock every INSERT, UPDATE and
        DELETE takes, and with itself (two gcs run one after the other); reads, and
        the row locks foreign-key checks take, go on. The tables are locked in the
        order a push or an import first writes them (packs, blobs, then tensors), so
        gc never holds one such a writer waits for while it waits for that writer.
        A writer that waited and names a blob gc deleted fails its foreign key: a
        Contention, which it retries.
        """
        if not self.sqlite:
            self.execute("LOCK TABLE packs, blobs, tensors IN SHARE ROW EXCLUSIVE MODE")

    def add_pack(
        self,
        pack_id: str,
        nbytes: int,
        blobs: Sequence[tuple[str, int, int, str | None]] = (),
        *,
        pending: bool = True,
    ) -> None:
        """Record a written pack and its blobs, as (digest, offset, nbytes, checksum).

        A blob that a concurrent push stored first keeps its first location. With
        ``pending`` (a push's or an import's pack), the pack's ``pending_packs`` row
        goes in the same transaction; PackCollected if a gc took it meanwhile (taken
        after the packs row, which waits for a gc's lock: gc never waits for this).
        """
        self.execute(
            "INSERT INTO packs (id, nbytes, created_at) VALUES (?, ?, ?)",
            (pack_id, nbytes, self.timestamp()),
        )
        if pending and not self.take_pending(pack_id):
            raise PackCollected(pack_id)
        self.execute_many(
            'INSERT INTO blobs (digest, pack_id, "offset", nbytes, checksum) '
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING",
            [(d, pack_id, o, n, c) for d, o, n, c in blobs],
        )

    def heal_blobs(self, pack_id: str, blobs: Sequence[tuple[str, int, int, str]]) -> None:
        """Point damaged stored tensors at good copies of their bytes in ``pack_id``.

        ``blobs`` holds (digest, offset, nbytes, checksum): bytes a push wrote and
        hashed to ``digest`` where the stored copy failed its byte check. Every version
        using the digest reads the good bytes from then on.
        """
        self.execute_many(
            'UPDATE blobs SET pack_id = ?, "offset" = ?, nbytes = ?, checksum = ? WHERE digest = ?',
            [
                (pack_id, offset, nbytes, checksum, digest)
                for digest, offset, nbytes, checksum in blobs
            ],
        )

    def move_blob(self, digest: str, pack_id: str, offset: int) -> None:
        self.execute(
            'UPDATE blobs SET pack_id = ?, "offset" = ? WHERE digest = ?', (pack_id, offset, digest)
        )

    def set_checksum(self, digest: str, checksum: str) -> None:
        self.execute("UPDATE blobs SET checksum = ? WHERE digest = ?", (checksum, digest))

    def delete_blobs(self, digests: Sequence[str]) -> None:
        for chunk in chunks(list(digests)):
            self.execute(f"DELETE FROM blobs WHERE digest IN ({marks(len(chunk))})", chunk)

    def delete_pack_rows(self, pack_ids: Sequence[str]) -> None:
        for chunk in chunks(list(pack_ids)):
            self.execute(f"DELETE FROM packs WHERE id IN ({marks(len(chunk))})", chunk)
