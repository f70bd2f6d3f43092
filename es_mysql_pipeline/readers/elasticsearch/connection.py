"""How to reach a cluster, as plain values: what a worker process needs to open its own
client, without the resource (and without importing Dagster)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import Elasticsearch
from elasticsearch.serializer import CompatibilityModeJsonSerializer, JsonSerializer

from es_mysql_pipeline import json_codec
from es_mysql_pipeline.errors import ConfigError
from es_mysql_pipeline.records import mask_secrets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    urls: tuple[str, ...]
    request_timeout: float
    connections_per_node: int
    ca_certs: str | None = None
    verify_certs: bool = True
    api_key: str | None = field(default=None, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    #: every secret value, blanked out of any text shown
    secrets: tuple[str | None, ...] = field(default=(), repr=False)

    def redact(self, text: str) -> str:
        return mask_secrets(text, list(self.secrets))

    def client(self, warn: bool = True) -> Elasticsearch:
        kwargs: dict[str, Any] = {}
        if self.api_key:
            kwargs["api_key"] = self.api_key
        elif self.basic_auth:
            kwargs["basic_auth"] = self.basic_auth
        if self.ca_certs:
            kwargs["ca_certs"] = self.ca_certs
        if not self.verify_certs:
            kwargs["verify_certs"] = False
            kwargs["ssl_show_warn"] = False
            if warn:
                log.warning(
                    "verify_certs=false: the Elasticsearch server certificate is not checked"
                )
        try:
            return Elasticsearch(
                list(self.urls),
                request_timeout=self.request_timeout,
                # Retries are ours (errors.Retry): elastic-transport 9.4 retries statuses
                # at once, without backoff or Retry-After, and cannot count them in metrics.
                max_retries=0,
                retry_on_status=(),
                retry_on_timeout=False,
                connections_per_node=self.connections_per_node,
                serializers=_SERIALIZERS,
                **kwargs,
            )
        except ValueError as exc:
            raise ConfigError(self.redact(f"es_url / TLS settings rejected: {exc}")) from None


class _Json(CompatibilityModeJsonSerializer):
    """Responses parsed by :mod:`es_mysql_pipeline.json_codec`: json's values, faster."""

    def json_loads(self, data: bytes) -> Any:
        return json_codec.loads(data)


#: the same for plain and compatibility-mode JSON: only the mimetype differs
_SERIALIZERS = {JsonSerializer.mimetype: _Json(), _Json.mimetype: _Json()}
