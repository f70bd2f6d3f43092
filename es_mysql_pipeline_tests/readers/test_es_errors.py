"""How an Elasticsearch failure is worded or retried (readers/elasticsearch/errors.py), for
the failures the wire-level server cannot easily produce: each error built as the client
raises it, and the one line (or the retry) the user gets. Also the client's warning about
unchecked certificates (readers/elasticsearch/connection.py)."""

from __future__ import annotations

import email.utils
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elastic_transport import SerializationError as TransportSerializationError
from elasticsearch import ApiError, UnsupportedProductError
from elasticsearch import __versionstr__ as CLIENT_VERSION

from es_mysql_pipeline.errors import ConfigError, SourceError
from es_mysql_pipeline.readers.elasticsearch.connection import Connection
from es_mysql_pipeline.readers.elasticsearch.errors import (
    ContextMissing,
    ErrorPolicy,
    Stopped,
    Transient,
    error_reason,
    error_type,
)

URL = "http://es:9200"


def policy(max_retries: int = 2) -> ErrorPolicy:
    return ErrorPolicy(
        URL, "logs", 5.0, max_retries, 0.0, 0.0, lambda s: s.replace("SECRET", "***")
    )


def api_error(
    status: int, body: Any, headers: dict[str, str] | None = None, message: str = "msg"
) -> ApiError:
    meta = ApiResponseMeta(
        status, "1.1", HttpHeaders(headers or {}), 0.01, NodeConfig("http", "es", 9200)
    )
    return ApiError(message, meta, body)


def failing(*errors: Exception) -> Any:
    """A request that raises ``errors`` in turn, then answers ``"ok"``; counts its calls."""
    todo = list(errors)

    def fn() -> str:
        fn.calls += 1  # type: ignore[attr-defined]
        if todo:
            raise todo.pop(0)
        return "ok"

    fn.calls = 0  # type: ignore[attr-defined]
    return fn


def test_an_expired_point_in_time_is_reopened_not_retried() -> None:
    p = policy()
    missing = api_error(404, {"error": {"type": "search_context_missing_exception"}})
    with pytest.raises(ContextMissing):
        p.call("search", p.retry(threading.Event()), failing(missing))
    already = failing(ContextMissing("gone"))
    with pytest.raises(ContextMissing, match="gone"):
        p.call("search", p.retry(threading.Event()), already)
    assert already.calls == 1


def test_failed_shards_and_truncated_responses_are_retried() -> None:
    p = policy()
    fn = failing(Transient("1 shard(s) failed"), TransportSerializationError("cut"))
    assert p.call("search", p.retry(threading.Event()), fn, timed=False) == "ok"
    assert fn.calls == 3
    assert p.transient_cause(TransportSerializationError("x")) == (
        "truncated or unreadable response",
        None,
    )
    once = policy(0)
    with pytest.raises(SourceError, match=r"still failing after 0 retries \(2 shard\(s\) failed"):
        once.call("search", once.retry(threading.Event()), failing(Transient("2 shard(s) failed")))


def test_a_stop_while_waiting_to_retry_leaves_the_read() -> None:
    p = policy()
    stop = threading.Event()
    stop.set()
    fn = failing(api_error(503, {"error": {"type": "unavailable"}}))
    with pytest.raises(Stopped):
        p.call("search", p.retry(stop), fn)
    assert fn.calls == 1


def test_a_stopped_read_is_not_retried() -> None:
    fn = failing(Stopped())
    with pytest.raises(Stopped):
        policy().call("search", policy().retry(threading.Event()), fn)
    assert fn.calls == 1


def permanent(exc: Exception, what: str = "search") -> Exception:
    p = policy()
    with pytest.raises((ConfigError, SourceError)) as info:
        p.retry(threading.Event()).wait_or_raise(exc, what)
    return info.value


def test_a_server_that_is_not_elasticsearch() -> None:
    meta = api_error(200, {}).meta
    err = permanent(UnsupportedProductError("no header", meta, {}))
    assert isinstance(err, ConfigError)
    assert str(err) == f"the server at {URL} is not Elasticsearch (no X-Elastic-Product header)"


def test_refused_compatibility_headers_name_the_client_version() -> None:
    exc = api_error(400, {"error": {"type": "media_type_header_exception", "reason": "bad v"}})
    err = permanent(exc)
    assert isinstance(err, ConfigError)
    assert "refused the client's compatibility headers (bad v)" in (str(err))
    assert f"elasticsearch client {CLIENT_VERSION} does not match" in str(err)


def test_an_unknown_server_error_is_one_line_without_secrets() -> None:
    exc = api_error(500, {"error": {"type": "boom", "reason": "SECRET inside"}})
    err = permanent(exc, "count")
    assert type(err) is SourceError
    assert str(err) == "Elasticsearch count failed: HTTP 500 boom: *** inside"


def test_a_bug_is_named_by_its_class() -> None:
    err = permanent(KeyError("hits"), "search")
    assert type(err) is SourceError
    assert str(err) == "Elasticsearch search failed: KeyError: 'hits'"


def test_error_type_of_odd_bodies() -> None:
    assert error_type(api_error(500, {"error": "plain text error"})) == "plain text error"
    assert error_type(api_error(502, "<html>bad gateway</html>", message="Bad Gateway")) == (
        "Bad Gateway"
    )
    assert error_type(api_error(500, {"error": {"reason": "r"}})) == "error"
    assert error_type(api_error(403, {"message": "denied"}, message="Forbidden")) == "Forbidden"


def test_error_reason_picks_the_most_specific_cause() -> None:
    assert error_reason(api_error(502, "upstream down")) == "upstream down"
    assert error_reason(api_error(502, None, message="Bad Gateway")) == "Bad Gateway"
    phase = {
        "error": {
            "type": "search_phase_execution_exception",
            "reason": "all shards failed",
            "root_cause": [{"type": "x"}, "odd"],  # no reason: not a cause worth naming
            "caused_by": {"type": "too_many_clauses", "reason": "maxClauseCount is 1024"},
        }
    }
    assert error_reason(api_error(400, phase)) == "too_many_clauses: maxClauseCount is 1024"
    bare = {"error": {"type": "t", "reason": "only  the\nreason"}}
    assert error_reason(api_error(400, bare)) == "only the reason"


def retry_after(value: str) -> float | None:
    exc = api_error(429, {"error": {"type": "too_many"}}, {"Retry-After": value})
    return policy().transient_cause(exc)[1]


def test_retry_after_as_seconds_or_an_http_date() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("-3") == 0.0
    later = datetime.now(timezone.utc) + timedelta(seconds=120)
    waited = retry_after(email.utils.format_datetime(later, usegmt=True))
    assert waited is not None and 100 < waited <= 120
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    assert retry_after(email.utils.format_datetime(past, usegmt=True)) == 0.0
    assert retry_after("soon") is None


def test_unchecked_certificates_are_warned_about_once_not_per_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    conn = Connection(("https://es:9200",), 5.0, 10, verify_certs=False)
    with conn.client(warn=False):
        pass  # a slice's worker process: the step already said it
    assert "verify_certs=false" not in caplog.text
    with conn.client():
        pass
    assert "verify_certs=false: the Elasticsearch server certificate is not checked" in (
        caplog.text
    )
