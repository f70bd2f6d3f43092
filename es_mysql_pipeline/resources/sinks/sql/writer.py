"""Writing batches: one DBAPI connection per worker, one transaction per batch, connection
errors retried with backoff, data errors bisected down to the record that caused them."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from es_mysql_pipeline.errors import SinkError
from es_mysql_pipeline.metrics.recorder import get_recorder
from es_mysql_pipeline.records import Batch
from es_mysql_pipeline.resources.sinks.base import (
    SchemaReport,
    SinkSession,
    SinkWriter,
    TableShape,
    WriteCounts,
)
from es_mysql_pipeline.resources.sinks.sql.bulk_load import (
    BulkEncoder,
    NotClean,
    load_bulk_file,
    load_data_statement,
    local_infile,
)
from es_mysql_pipeline.resources.sinks.sql.errors import (
    PacketTooLarge,
    error_code,
    is_data_error,
    is_retryable,
    record_reason,
)
from es_mysql_pipeline.resources.sinks.sql.values import column_kind, pack_overflow, to_db_value
from es_mysql_pipeline.staging import scratch_dir

if TYPE_CHECKING:
    from es_mysql_pipeline.resources.sinks.sql.resource import SqlSink

#: Error numbers after which the server has hung up on a too-large packet.
_PACKET_CODES = (1153, 2006, 2013)


class SqlSession(SinkSession):
    """One load of one table: the engine, the fitted table and what fitting it changed."""

    def __init__(
        self,
        sink: SqlSink,
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
        self.bulk = (
            sink.bulk_load and sink.write_mode in ("skip", "append") and local_infile(engine)
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

    def writer(self) -> SinkWriter:
        return SqlWriter(self)

    def schema_report(self) -> SchemaReport:
        return self.report

    def encoder(self) -> BulkEncoder | None:
        if not self.bulk:
            return None
        return BulkEncoder(tuple(self.sources), tuple(self.kinds), scratch_dir(), self.packed)

    def commit(self) -> None:
        self.engine.dispose()

    def abort(self) -> None:
        self.engine.dispose()


class SqlWriter(SinkWriter):
    """One DBAPI connection; executemany turns into multi-row INSERTs (PyMySQL) per batch."""

    def __init__(self, session: SqlSession) -> None:
        self.session = session
        self.sink = session.sink
        engine = session.engine
        self.columns = session.columns
        self.sources = session.sources
        self.packed = session.packed
        self.kinds = session.kinds
        self.id_column = session.shape.id_column
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.is_mysql = engine.dialect.name in ("mysql", "mariadb")
        self.sql, self.select_sql = self._statements(engine)
        self.load_sql = (
            load_data_statement(engine, session.table.name, self.columns) if session.bulk else None
        )
        self._encoder = session.encoder()
        #: Batches LOAD DATA handed back to the checked INSERT path (a bad record in them).
        self.bulk_fallbacks = 0
        self._max_packet: int | None = None
        self._conn: Any = None

    def _statements(self, engine: Engine) -> tuple[str, str]:
        q = engine.dialect.identifier_preparer.quote
        mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        table = q(self.session.table.name)
        cols = ", ".join(q(c) for c in self.columns)
        values = ", ".join([mark] * len(self.columns))
        sql = f"INSERT INTO {table} ({cols}) VALUES ({values})"
        id_at = self.sources.index(self.id_column) if self.id_column in self.sources else 0
        pk = q(self.columns[id_at])
        mode = self.sink.write_mode
        others = [c for i, c in enumerate(self.columns) if i != id_at]
        if mode == "append":
            pass
        elif self.is_mysql:
            if mode == "skip" or not others:
                sql += f" ON DUPLICATE KEY UPDATE {pk} = {pk}"
            else:
                sets = ", ".join(f"{q(c)} = VALUES({q(c)})" for c in others)
                sql += f" ON DUPLICATE KEY UPDATE {sets}"
        elif mode == "skip" or not others:
            sql += f" ON CONFLICT ({pk}) DO NOTHING"
        else:
            sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in others)
            sql += f" ON CONFLICT ({pk}) DO UPDATE SET {sets}"
        select_sql = f"SELECT {pk} FROM {table} WHERE {pk} IN "
        self.mark = mark
        return sql, select_sql

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
        cols, kinds = self.sources, self.kinds
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
        """Run ``attempt_write`` until it succeeds; connection-class errors are retried
        with backoff (fresh counts each time: the failed attempt was rolled back)."""
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
        """Write ``batch`` in one transaction; on a data error, split it to find the culprits."""
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
        if not self.is_mysql or error_code(exc) not in _PACKET_CODES:
            return False
        size = sum(len(v) for record in batch for v in record.values() if isinstance(v, str))
        if size < 1_000_000:
            return False
        if self._max_packet is None:
            try:
                with self.session.engine.connect() as conn:
                    self._max_packet = int(
                        conn.exec_driver_sql("SELECT @@max_allowed_packet").scalar() or 0
                    )
            except sa.exc.SQLAlchemyError:
                return False
        return size >= self._max_packet

    def _write_tx(self, batch: Batch, counts: WriteCounts, bulk: bool = True) -> None:
        if bulk and self.load_sql is not None and len(batch) > 1:
            try:
                self._bulk_tx(batch, counts)
                return
            except NotClean:  # rolled back: the checked INSERT path below finds the bad records
                self.bulk_fallbacks += 1
        conn = self._connection()
        with _transaction(conn) as cur:
            existing: set[str] = set()
            if self.sink.write_mode == "upsert":
                existing = self._existing_ids(cur, batch)
            before = self._total_changes(conn)
            cur.executemany(self.sql, self._rows(batch))
            after = self._total_changes(conn)
            affected = cur.rowcount if before is None or after is None else after - before
        n = len(batch)
        mode = self.sink.write_mode
        if mode == "append":
            counts.inserted += n
        elif mode == "skip":
            inserted = max(0, min(affected, n)) if affected is not None and affected >= 0 else n
            counts.inserted += inserted
            counts.skipped += n - inserted
        else:
            seen = existing
            ins = 0
            for record in batch:
                rid = str(record.get(self.id_column or ""))
                if rid not in seen:
                    ins += 1
                    seen.add(rid)
            counts.inserted += ins
            counts.updated += n - ins

    def _bulk_tx(self, batch: Batch, counts: WriteCounts) -> None:
        assert self._encoder is not None
        path = self._encoder.encode([batch])
        try:
            self._load_file(path, len(batch), counts)
        finally:
            os.unlink(path)

    def _load_file(self, path: str, rows: int, counts: WriteCounts) -> None:
        assert self.load_sql is not None
        conn = self._connection()
        with _transaction(conn) as cur:
            inserted = load_bulk_file(cur, self.load_sql, path, self.sink.write_mode)
        counts.inserted += inserted
        counts.skipped += rows - inserted

    def _total_changes(self, conn: Any) -> int | None:
        """SQLite's rowcount counts ignored conflicts too; its change counter does not."""
        if not self.is_sqlite:
            return None
        return int(conn.driver_connection.total_changes)

    def _existing_ids(self, cur: Any, batch: Batch) -> set[str]:
        ids = list({str(r.get(self.id_column or "")) for r in batch})
        found: set[str] = set()
        for i in range(0, len(ids), 1000):
            chunk = ids[i : i + 1000]
            cur.execute(self.select_sql + "(" + ", ".join([self.mark] * len(chunk)) + ")", chunk)
            found.update(str(row[0]) for row in cur.fetchall())
        return found


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
