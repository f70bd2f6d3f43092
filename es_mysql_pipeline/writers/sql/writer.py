"""Writing batches: one DBAPI connection per worker, one transaction per batch, connection
errors retried with backoff, data errors bisected down to the record that caused them."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from es_mysql_pipeline.errors import ConfigError, SinkError
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Batch
from es_mysql_pipeline.staging import scratch_dir
from es_mysql_pipeline.writers.base import (
    DELETED_AT_COLUMN,
    SchemaReport,
    SinkSession,
    SinkWriter,
    TableShape,
    WriteCounts,
    delete_marker_test,
)
from es_mysql_pipeline.writers.sql import refresh
from es_mysql_pipeline.writers.sql.bulk_load import (
    BulkEncoder,
    NotClean,
    column_kind,
    load_bulk_file,
    load_data_statement,
    local_infile,
    pack_overflow,
    to_db_value,
)
from es_mysql_pipeline.writers.sql.errors import (
    PacketTooLarge,
    error_code,
    is_data_error,
    is_retryable,
    record_reason,
)

if TYPE_CHECKING:
    from es_mysql_pipeline.writers.sql.sink import SqlTarget

#: Ids per ``IN (...)`` list of a statement.
CHUNK = 1000
#: Error numbers after which the server has hung up on a too-large packet.
_PACKET_CODES = (1153, 2006, 2013)


class SqlSession(SinkSession):
    """One load of one table: the engine, the fitted table and what fitting it changed."""

    def __init__(
        self,
        sink: SqlTarget,
        engine: Engine,
        table: sa.Table,
        shape: TableShape,
        report: SchemaReport,
    ) -> None:
        self.sink = sink
        self.engine = engine
        self.table = table
        self.shape = shape
        self.report = report
        #: How a row meets an existing one: a refresh loads a new table like ``skip`` (or
        #: ``upsert`` when versions decide which of two records of an id is kept).
        self.row_mode: str = sink.write_mode
        if sink.write_mode == "refresh":
            self.row_mode = "upsert" if sink.version_field else "skip"
        #: Records carrying the delete marker delete their row (never bulk loaded).
        self.is_marked = delete_marker_test(shape.delete_marker) if shape.delete_marker else None
        self.bulk = (
            sink.bulk_load
            and self.row_mode in ("skip", "append")
            and self.is_marked is None
            and local_infile(engine)
        )
        # Only the data's columns: other columns of an existing table keep their defaults.
        source_of = {
            column: name for name, column in report.plan.items() if name not in report.discarded
        }
        cols = [c for c in table.columns if c.name in source_of]
        self.columns = [c.name for c in cols]
        #: The staged field each column takes its values from.
        self.sources = [source_of[c.name] for c in cols]
        self.kinds = [column_kind(c.type) for c in cols]
        #: Fields beyond the column budget, moved into the overflow column per batch.
        self.packed = tuple(report.overflowed)
        by_lower = {c.name.lower(): c.name for c in table.columns}
        #: The version column (newest wins), when the sink has a version field.
        self.version_column = (
            report.plan.get(sink.version_field, by_lower.get(sink.version_field.lower()))
            if sink.version_field
            else None
        )
        if sink.version_field and self.version_column not in self.columns:
            raise ConfigError(
                f"version_field={sink.version_field!r} is not a field of the data "
                f"(fields: {', '.join(sorted(report.plan)[:20])})"
            )
        #: A soft-deleted row that comes back is live again.
        self.deleted_at = DELETED_AT_COLUMN if DELETED_AT_COLUMN in table.columns else None
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_mysql = engine.dialect.name in ("mysql", "mariadb")
        self._statements(engine.dialect)
        self.load_sql = load_data_statement(engine, table.name, self.columns) if self.bulk else None

    def _statements(self, dialect: sa.Dialect) -> None:
        """The writers' SQL: the INSERT of the write mode, and the id lookups and deletes."""
        q = dialect.identifier_preparer.quote
        mark = self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        table = q(self.table.name)
        cols = ", ".join(q(c) for c in self.columns)
        sql = f"INSERT INTO {table} ({cols}) VALUES ({', '.join([mark] * len(self.columns))})"
        id_column = self.shape.id_column
        id_at = self.sources.index(id_column) if id_column in self.sources else 0
        pk = q(self.columns[id_at])
        mode, version = self.row_mode, self.version_column
        others = [q(c) for i, c in enumerate(self.columns) if i != id_at and c != version]
        if self.deleted_at is not None and mode == "upsert":
            others.append(q(self.deleted_at))
        if version is not None:
            others.append(q(version))  # last: MySQL's later assignments see earlier ones
        revived = q(self.deleted_at or "")
        if mode == "append":
            pass
        elif mode == "skip" or not others:
            sql += (
                f" ON DUPLICATE KEY UPDATE {pk} = {pk}"
                if self.is_mysql
                else f" ON CONFLICT ({pk}) DO NOTHING"
            )
        elif self.is_mysql:
            new = {c: "NULL" if c == revived else f"VALUES({c})" for c in others}
            if version is not None:
                v = q(version)
                newer = f"({v} IS NULL OR VALUES({v}) > {v})"
                new = {c: f"IF({newer}, {new[c]}, {c})" for c in others}
            sql += " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = {new[c]}" for c in others)
        else:
            new = {c: "NULL" if c == revived else f"excluded.{c}" for c in others}
            sets = ", ".join(f"{c} = {new[c]}" for c in others)
            sql += f" ON CONFLICT ({pk}) DO UPDATE SET {sets}"
            if version is not None:
                v = q(version)
                sql += f" WHERE {table}.{v} IS NULL OR excluded.{v} > {table}.{v}"
        self.sql = sql
        self.select_sql = f"SELECT {pk} FROM {table} WHERE {pk} IN "
        self.lock_clause = " FOR UPDATE" if self.is_mysql and version is not None else ""
        self.delete_sql = f"DELETE FROM {table} WHERE {pk} IN "
        self.stamp_sql = (
            f"UPDATE {table} SET {revived} = {mark} WHERE {revived} IS NULL AND {pk} IN "
        )

    def writer(self) -> SinkWriter:
        return SqlWriter(self)

    def schema_report(self) -> SchemaReport:
        return self.report

    def encoder(self) -> BulkEncoder | None:
        if not self.bulk:
            return None
        return BulkEncoder(tuple(self.sources), tuple(self.kinds), scratch_dir(), self.packed)

    def commit(self) -> None:
        try:
            if self.sink.write_mode == "refresh":
                refresh.swap(self.engine, self.sink.table)
        finally:
            self.engine.dispose()

    def abort(self) -> None:
        try:
            if self.sink.write_mode == "refresh":
                with contextlib.suppress(sa.exc.SQLAlchemyError):
                    refresh.discard(self.engine, self.sink.table)
        finally:
            self.engine.dispose()


class SqlWriter(SinkWriter):
    """One DBAPI connection; executemany turns into multi-row INSERTs (PyMySQL) per batch."""

    def __init__(self, session: SqlSession) -> None:
        self.session = session
        self.sink = session.sink
        self.packed = session.packed
        self._encoder = session.encoder()
        #: Batches LOAD DATA handed back to the checked INSERT path (a bad record in them).
        self.bulk_fallbacks = 0
        self._max_packet: int | None = None
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = self.session.engine.raw_connection()
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self._conn = None

    def _connection_lost(self) -> bool:
        """Whether the last error left the DBAPI connection closed: a connection-class
        failure whatever its type (PyMySQL drops its socket on a lost connection and its
        LOAD DATA LOCAL cleanup then raises ``AttributeError`` instead of error 2013)."""
        if self._conn is None:
            return False
        driver = getattr(self._conn, "driver_connection", None)
        return driver is not None and getattr(driver, "open", True) is False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _rows(self, batch: Batch) -> list[tuple[Any, ...]]:
        cols, kinds = self.session.sources, self.session.kinds
        return [
            tuple(to_db_value(record.get(c), k) for c, k in zip(cols, kinds, strict=True))
            for record in batch
        ]

    def write(self, batch: Batch) -> WriteCounts:
        batch = pack_overflow(batch, self.packed)
        return self._retrying(lambda counts: self._write_isolating(batch, counts))

    def write_encoded(self, path: str, rows: int, records: Callable[[], Batch]) -> WriteCounts:
        def load(counts: WriteCounts) -> None:
            try:
                self._load_file(path, rows, counts)
            except Exception as exc:
                if not (isinstance(exc, NotClean) or is_data_error(exc)):
                    raise
                # Rolled back: the checked INSERT path finds and dead-letters the bad records.
                self.bulk_fallbacks += 1
                self._write_isolating(pack_overflow(records(), self.packed), counts, bulk=False)

        return self._retrying(load)

    def _retrying(self, attempt_write: Callable[[WriteCounts], None]) -> WriteCounts:
        """Connection-class errors retried with backoff, with fresh counts each time (the
        failed attempt was rolled back)."""
        counts = WriteCounts()
        attempt = 0
        while True:
            try:
                attempt_write(counts)
                return counts
            except Exception as exc:
                if not (is_retryable(exc) or self._connection_lost()):
                    raise self.sink.session_error(exc, len(self.session.shape.columns)) from None
                self._drop_connection()
                attempt += 1
                if attempt > self.sink.max_retries:
                    raise SinkError(
                        f"gave up after {self.sink.max_retries} retries: "
                        f"{self.sink.clean_error(exc)}"
                    ) from None
                counts = WriteCounts(retries=attempt)
                get_recorder().retry("load")
                delay = self.sink.retry_backoff_seconds * (2 ** (attempt - 1))
                time.sleep(min(delay, 30.0) * (0.5 + random.random()))

    def _write_isolating(self, batch: Batch, counts: WriteCounts, bulk: bool = True) -> None:
        """One transaction; on a data error, bisect the batch down to the bad records."""
        try:
            self._write_tx(batch, counts, bulk)
        except Exception as exc:
            if not is_data_error(exc) and not self._oversized(batch, exc):
                raise
            if error_code(exc) in _PACKET_CODES:  # the server drops the connection after it
                self._drop_connection()
                exc = PacketTooLarge(1153, "packet bigger than max_allowed_packet")
            if len(batch) == 1:
                counts.failed += 1
                counts.failures.append((batch[0], record_reason(exc)))
                return
            mid = len(batch) // 2
            self._write_isolating(batch[:mid], counts, bulk)
            self._write_isolating(batch[mid:], counts, bulk)

    def _oversized(self, batch: Batch, exc: BaseException) -> bool:
        """A lost connection while sending more than ``max_allowed_packet``: the server hung
        up on the size (MySQL reports it as 2006/2013 as often as 1153), not on the network."""
        if not self.session.is_mysql or error_code(exc) not in _PACKET_CODES:
            return False
        size = sum(len(v) for record in batch for v in record.values() if isinstance(v, str))
        if size < 1_000_000:
            return False
        if self._max_packet is None:  # if the server cannot say, its error is retried too
            with self.session.engine.connect() as conn:
                self._max_packet = int(
                    conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar() or 0
                )
        return size >= self._max_packet

    def _write_tx(self, batch: Batch, counts: WriteCounts, bulk: bool = True) -> None:
        if self.session.is_marked is not None:
            marked = [r for r in batch if self.session.is_marked(r)]
            if marked:
                self._delete_marked(marked, counts)
                batch = [r for r in batch if not self.session.is_marked(r)]
                if not batch:
                    return
        if bulk and self._encoder is not None and len(batch) > 1:
            path = self._encoder.encode([batch])
            try:
                self._load_file(path, len(batch), counts)
                return
            except NotClean:  # rolled back: the checked INSERT path below finds the bad records
                self.bulk_fallbacks += 1
            finally:
                os.unlink(path)
        conn = self._connection()
        mode = self.session.row_mode
        versioned = self.session.version_column is not None
        with _transaction(conn) as cur:
            existing: set[str] = set()
            if mode == "upsert":
                if versioned and self.session.is_sqlite:
                    # The write lock first: the ids seen must still be the ids written over.
                    cur.execute("BEGIN IMMEDIATE")
                existing = self._existing_ids(cur, batch)
            before = self._total_changes(conn)
            cur.executemany(self.session.sql, self._rows(batch))
            after = self._total_changes(conn)
            affected = cur.rowcount if before is None or after is None else after - before
        self._count(batch, mode, existing, affected, counts)

    def _count(
        self, batch: Batch, mode: str, existing: set[str], affected: int | None, counts: WriteCounts
    ) -> None:
        n = len(batch)
        if mode == "append":
            counts.inserted += n
            return
        if mode == "skip":
            inserted = max(0, min(affected, n)) if affected is not None and affected >= 0 else n
            counts.inserted += inserted
            counts.skipped += n - inserted
            return
        ins = 0
        for record in batch:
            rid = str(record.get(self.session.shape.id_column))
            if rid not in existing:
                ins += 1
                existing.add(rid)
        counts.inserted += ins
        if self.session.version_column is None or affected is None:
            counts.updated += n - ins
            return
        # MySQL counts an insert 1 and a changed row 2; SQLite counts each change 1.
        upd = (affected - ins) // 2 if self.session.is_mysql else affected - ins
        upd = max(0, min(upd, n - ins))
        counts.updated += upd
        counts.skipped += n - ins - upd  # an older (or same) version than the row's

    def _delete_marked(self, marked: Batch, counts: WriteCounts) -> None:
        """Delete (soft: stamp) the rows of records carrying the delete marker."""
        soft = self.session.shape.soft_delete
        if soft and self.session.deleted_at is None:
            raise ConfigError(f"table {self.session.table.name!r} has no {DELETED_AT_COLUMN}")
        done = 0
        with _transaction(self._connection()) as cur:
            for marks, chunk in self._id_chunks(marked):
                if soft:
                    cur.execute(self.session.stamp_sql + marks, [utc_now(), *chunk])
                else:
                    cur.execute(self.session.delete_sql + marks, chunk)
                done += max(cur.rowcount, 0)
        counts.deleted += done
        counts.skipped += len(marked) - done  # no row to delete: already gone
        get_recorder().deleted("soft" if soft else "hard", done)

    def _load_file(self, path: str, rows: int, counts: WriteCounts) -> None:
        assert self.session.load_sql is not None
        conn = self._connection()
        with _transaction(conn) as cur:
            inserted = load_bulk_file(cur, self.session.load_sql, path, self.session.row_mode)
        counts.inserted += inserted
        counts.skipped += rows - inserted

    def _total_changes(self, conn: Any) -> int | None:
        """SQLite's rowcount counts ignored conflicts too; its change counter does not."""
        if not self.session.is_sqlite:
            return None
        return int(conn.driver_connection.total_changes)

    def _existing_ids(self, cur: Any, batch: Batch) -> set[str]:
        found: set[str] = set()
        for marks, chunk in self._id_chunks(batch):
            cur.execute(self.session.select_sql + marks + self.session.lock_clause, chunk)
            found.update(str(row[0]) for row in cur.fetchall())
        return found

    def _id_chunks(self, batch: Batch) -> Iterator[tuple[str, list[str]]]:
        """The batch's distinct ids, a thousand at a time, with their ``(%s, ...)``."""
        ids = list({str(r.get(self.session.shape.id_column)) for r in batch})
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i : i + CHUNK]
            yield "(" + ", ".join([self.session.mark] * len(chunk)) + ")", chunk


@contextlib.contextmanager
def _transaction(conn: Any) -> Iterator[Any]:
    """A cursor whose work commits at the end, or rolls back on any exception."""
    cur = conn.cursor()
    try:
        yield cur
        conn.commit()
    except BaseException:
        with contextlib.suppress(Exception):
            conn.rollback()
        raise
    finally:
        cur.close()


def utc_now() -> datetime:
    """Now in UTC without a zone, as the DATETIME columns store it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)
