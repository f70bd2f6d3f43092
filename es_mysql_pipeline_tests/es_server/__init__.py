"""A wire-level Elasticsearch test server: real HTTP, the official client's real requests.

No Elasticsearch server package exists on our registries, so the source's tests talk to
this stdlib server instead. It answers the subset of the REST API the pipeline uses, with
bodies shaped as the Elasticsearch reference documents them, and is strict where real ES
is strict (unknown fields, missing sort for ``search_after``, unknown PIT ids, compatible-with
headers, result window) so that a client bug fails here as it would against a cluster.

Fault injection (:meth:`EsTestServer.inject`) and counters (:attr:`EsTestServer.stats`) let
tests prove retries resume exactly and let the benchmark separate server time from pipeline
time.
"""

from __future__ import annotations

from es_mysql_pipeline_tests.es_server.errors import EsError
from es_mysql_pipeline_tests.es_server.faults import Fault, Stats
from es_mysql_pipeline_tests.es_server.server import MAX_RESULT_WINDOW, EsTestServer

__all__ = ["MAX_RESULT_WINDOW", "EsError", "EsTestServer", "Fault", "Stats"]
