"""MySQL over TLS: a private MariaDB (own datadir and port) with a CA and server certificate
made in the test; ``SqlSink(ssl_ca=...)`` verifies it, a wrong CA fails with a clear line.

The shared MariaDB runs without TLS, and enabling it needs a restart, so the test starts a
second ``mariadbd`` and stops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from es_mysql_pipeline.resources.sinks import SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline_tests.badinput.support import (
    assert_clear_failure,
    assert_invariant,
    run_materialize,
)
from es_mysql_pipeline_tests.conftest import need_service
from es_mysql_pipeline_tests.helpers import table_rows
from es_mysql_pipeline_tests.support.mysql import mysql_url
from es_mysql_pipeline_tests.support.ports import free_port
from es_mysql_pipeline_tests.support.tls import make_ca, make_server_cert, write_cert, write_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class TlsMariaDb:
    """A private mariadbd with ``--ssl-*`` options; root over TCP without a password."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        ca, ca_key = make_ca("es-mysql-pipeline test CA")
        server, server_key = make_server_cert(ca, ca_key)
        wrong, _ = make_ca("some other CA")
        self.ca = base / "ca.pem"
        self.wrong_ca = base / "wrong-ca.pem"
        self.cert = base / "server.pem"
        self.key = base / "server-key.pem"
        write_cert(self.ca, ca)
        write_cert(self.wrong_ca, wrong)
        write_cert(self.cert, server)
        write_key(self.key, server_key, traditional=True)

    @property
    def url(self) -> str:
        return mysql_url(self.port)

    def start(self) -> None:
        datadir = self.base / "data"
        install = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--user=root",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert install.returncode == 0, install.stderr[-2000:]
        log = open(self.base / "mariadbd.log", "wb")
        self.proc = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.base / 'mysqld.sock'}",
                f"--pid-file={self.base / 'mysqld.pid'}",
                "--user=root",
                f"--ssl-ca={self.ca}",
                f"--ssl-cert={self.cert}",
                f"--ssl-key={self.key}",
                "--skip-grant-tables=0",
                "--innodb-buffer-pool-size=16M",
                "--skip-log-bin",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.base / "mariadbd.log").read_text()[-2000:]
            try:
                engine = sa.create_engine(self.url.replace("/test", "/"))
                with engine.begin() as conn:
                    conn.exec_driver_sql("CREATE DATABASE IF NOT EXISTS test")
                engine.dispose()
                return
            except sa.exc.OperationalError:
                time.sleep(0.3)
        raise AssertionError("private mariadbd did not start in 60 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def tls_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsMariaDb]:
    if not (shutil.which("mariadbd") and shutil.which("mariadb-install-db")):
        need_service("mariadbd / mariadb-install-db not installed")
    db = TlsMariaDb(tmp_path_factory.mktemp("tls-mariadb"))
    try:
        db.start()
        yield db
    finally:
        db.stop()


def _source(tmp: Path) -> FileSource:
    (tmp / "in.csv").write_text("id,timestamp,v\n1,2024-01-01,a\n2,2024-01-02,b\n")
    return FileSource(path=str(tmp / "in.csv"))


def test_load_over_verified_tls(tls_db: TlsMariaDb, tmp_path: Path) -> None:
    sink = SqlSink(url=tls_db.url, table="tls_rows", ssl_ca=str(tls_db.ca))
    out = run_materialize(_source(tmp_path), sink, tmp_path)
    assert_invariant(out, 2)
    assert set(table_rows(tls_db.url, "tls_rows")) == {"1", "2"}
    # The session really is encrypted: ask the server what it negotiated.
    engine = sink.engine()
    try:
        with engine.connect() as conn:
            cipher = conn.exec_driver_sql("SHOW SESSION STATUS LIKE 'Ssl_cipher'").one()[1]
    finally:
        engine.dispose()
    assert cipher, "the connection is not using TLS"


def test_wrong_ca_fails_with_a_clear_line(tls_db: TlsMariaDb, tmp_path: Path) -> None:
    sink = SqlSink(url=tls_db.url, table="tls_wrong", ssl_ca=str(tls_db.wrong_ca))
    out = run_materialize(_source(tmp_path), sink, tmp_path)
    assert_clear_failure(out.failure, "certificate verify failed")


def test_cli_over_tls_and_with_a_wrong_ca(tls_db: TlsMariaDb, tmp_path: Path) -> None:
    python = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
    _source(tmp_path)
    base = [
        python, "-m", "es_mysql_pipeline", "--csv_file", str(tmp_path / "in.csv"),
        "--no-progress", "--sink_type", "mysql", "--db_port", str(tls_db.port),
        "--db_table", "tls_cli", "--dead-letter-dir", str(tmp_path / "dl"),
    ]  # fmt: skip
    env = {**os.environ, "DB_PASSWORD": ""}
    ok = subprocess.run(
        [*base, "--db_ssl_ca", str(tls_db.ca)], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [*base, "--db_ssl_ca", str(tls_db.wrong_ca)], capture_output=True, text=True, env=env
    )
    lines = [line for line in bad.stderr.splitlines() if line.strip()]
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr
    assert "certificate verify failed" in lines[0]


def test_missing_ca_file_names_the_setting(tmp_path: Path) -> None:
    sink = SqlSink(
        url="mysql+pymysql://root@127.0.0.1:3306/test", ssl_ca=str(tmp_path / "nope.pem")
    )
    out = run_materialize(_source(tmp_path), sink, tmp_path)
    assert_clear_failure(out.failure, "ssl_ca", "nope.pem")
