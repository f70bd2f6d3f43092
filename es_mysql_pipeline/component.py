"""Many pipelines in one code location, declared in a ``defs.yaml`` (a Dagster component).

Each pipeline becomes its own asset chain (``orders/raw`` → ``orders/clean`` →
``orders/loaded``) in its own group, with its own resource keys (``orders__source`` …), job,
schedule or automation condition, and run and asset tag ``es_mysql_pipeline/pipeline_id``.
Secrets are environment-variable *names* (``password_env``), turned into ``dg.EnvVar``:
``{{ env.X }}`` would put the value itself in the definitions the UI shows. Mistakes fail
when the code location loads, one line naming the place in the YAML.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NoReturn

import dagster as dg
import yaml
from pydantic import BaseModel, Field, ValidationError

from es_mysql_pipeline.assets import OWNERS, Chain, build_assets, build_unplaced_asset
from es_mysql_pipeline.hooks import PIPELINE_METRICS_HOOKS, PUSHGATEWAY_KEY
from es_mysql_pipeline.identifiers import column_name
from es_mysql_pipeline.io_manager import StagingIOManagerResource
from es_mysql_pipeline.metrics.pushgateway import PushgatewayResource
from es_mysql_pipeline.resources.settings import PipelineSettings
from es_mysql_pipeline.resources.sinks import JsonlSink, SqlSink
from es_mysql_pipeline.resources.sources import FileSource
from es_mysql_pipeline.resources.sources.elasticsearch import ElasticsearchSource
from es_mysql_pipeline.sample_data import sample_csv_path
from es_mysql_pipeline.targets import PIPELINE_TAG, TAG_PREFIX, pool_name, target_tags

__all__ = ["EsMysqlPipelines", "PipelinesConfigError", "find_pipeline", "load_pipelines_file"]

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
LAG = re.compile(r"^\s*(\d+)\s*([hd])\s*$")
ExecutorName = Literal["in_process", "multiprocess", "celery"]


class PipelinesConfigError(ValueError):
    """A mistake in a ``defs.yaml``: one line, ``file:line: where: what``."""


class ConnectionModel(dg.Resolvable, dg.Model):
    """A named Elasticsearch cluster or database; secrets by environment-variable name."""

    type: Literal["elasticsearch", "sql", "mysql", "sqlite"]
    #: Elasticsearch: the cluster's URLs.
    hosts: list[str] = []
    #: A database: a SQLAlchemy URL without its password.
    url: str | None = None
    username: str | None = None
    password_env: str | None = None
    api_key_env: str | None = None
    ca_certs: str | None = None
    #: Any other field of the source or sink (``verify_certs``, ``ssl_ca``, ``page_size`` …).
    options: dict[str, Any] = {}


class SourceModel(dg.Resolvable, dg.Model):
    """An index or pattern of an Elasticsearch connection, or a CSV / JSON Lines file."""

    connection: str | None = None
    index: str | None = None
    query: str | None = None
    path: str | None = None
    #: The field that identifies a record in the file (default ``id``).
    id_field: str | None = None
    #: The record's time field (detected when not given).
    time_field: str | None = None
    format: Literal["auto", "csv", "jsonl"] | None = None
    options: dict[str, Any] = {}


class SinkModel(dg.Resolvable, dg.Model):
    """A table of a database connection, a SQLite file, or a JSON Lines directory."""

    connection: str | None = None
    table: str | None = None
    sqlite: str | None = None
    jsonl_dir: str | None = None
    #: Any other field of the sink (``batch_size``, ``workers``, ``bulk_load`` …).
    options: dict[str, Any] = {}


class PartitionsModel(dg.Resolvable, dg.Model):
    type: Literal["daily", "hourly", "none"] = "daily"
    #: ``YYYY-MM-DD`` (hourly also ``YYYY-MM-DD-HH:MM``), UTC.
    start: str = "2024-01-01"
    #: The first partition not to offer (exclusive), same format; unset: up to now.
    end: str | None = None


class BackfillModel(dg.Resolvable, dg.Model):
    type: Literal["single_run", "multi_run"] = "single_run"
    max_partitions_per_run: int = 1


class PipelineOptions(dg.Resolvable, dg.Model):
    """What ``defaults`` may set for every pipeline, and each pipeline for itself."""

    write_mode: Literal["skip", "upsert", "append", "refresh"] | None = None
    schema_contract: Literal["evolve", "freeze", "discard"] | None = None
    #: Every :class:`PipelineSettings` field (``id_column``, ``rename``, ``casts`` …).
    settings: dict[str, Any] = {}
    partitions: PartitionsModel | None = None
    #: A cron: the schedule, or with ``lag`` the tick of the late-data re-load.
    schedule: str | None = None
    #: Re-load the partitions of the last ``2d`` (or ``6h``) on each ``schedule`` tick.
    lag: str | None = None
    backfill: BackfillModel | None = None
    #: ``in_process`` (default: a small run costs no step subprocesses), ``multiprocess``
    #: or ``celery`` (the ``distributed`` extra).
    executor: ExecutorName | None = None
    #: The load's Dagster pool (default: one per sink table).
    pool: str | None = None
    group: str | None = None
    owners: list[str] | None = None
    tags: dict[str, str] = {}


class PipelineModel(PipelineOptions):
    name: str
    source: SourceModel
    sink: SinkModel


class EsMysqlPipelines(dg.Component, dg.Model, dg.Resolvable):
    """Named connections, defaults, and a list of pipelines: one asset chain each."""

    connections: dict[str, ConnectionModel] = {}
    defaults: PipelineOptions = Field(default_factory=PipelineOptions)
    pipelines: list[PipelineModel] = []
    #: Dead letters and the default staging folder live here (``ES_MYSQL_PIPELINE_DATA``).
    data_dir: str | None = None
    #: Where stages go (a folder or ``s3://…``); default ``<data_dir>/staging``.
    staging_path: str | None = None

    @classmethod
    def get_additional_scope(cls) -> Mapping[str, Any]:
        """``{{ sample_csv }}`` (the bundled CSV) and ``{{ data_dir }}`` in a defs.yaml."""
        return {
            **super().get_additional_scope(),
            "sample_csv": sample_csv_path(),
            "data_dir": os.environ.get("ES_MYSQL_PIPELINE_DATA") or ".",
        }

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        path = context.path if context.path.is_file() else context.path / "defs.yaml"
        doc = context.component_path.instance_key
        return self.definitions(path if path.exists() else None, doc if isinstance(doc, int) else 0)

    def definitions(self, yaml_file: Path | None = None, doc: int = 0) -> dg.Definitions:
        """Every pipeline's assets, resources, job and schedule or automation."""
        shared = dg.Definitions(
            resources={PUSHGATEWAY_KEY: shared_pushgateway()},
            executor=_executor(self.defaults.executor or "in_process"),
        )
        plans = self.plans(yaml_file, doc)
        return dg.Definitions.merge(shared, *(plan.definitions() for plan in plans))

    def plans(self, yaml_file: Path | None = None, doc: int = 0) -> list[PipelinePlan]:
        """Check the whole file, then one plan per pipeline (raises PipelinesConfigError).
        ``doc``: the component's document in ``yaml_file`` (0: the first), for line numbers."""
        where = _Where(yaml_file, doc)
        data_dir = self.data_dir or os.environ.get("ES_MYSQL_PIPELINE_DATA") or "."
        staging = self.staging_path or os.path.join(data_dir, "staging")
        for cname, conn in self.connections.items():
            _check_connection(where, cname, conn)
        seen: dict[str, int] = {}
        tables: dict[str, tuple[int, str]] = {}
        plans = []
        for i, pipeline in enumerate(self.pipelines):
            at = ("pipelines", i)
            _check_name(where, (*at, "name"), "pipeline", pipeline.name)
            if pipeline.name in seen:
                where.fail(
                    (*at, "name"),
                    f"duplicate pipeline name {pipeline.name!r} "
                    f"(also pipelines[{seen[pipeline.name]}])",
                )
            seen[pipeline.name] = i
            plan = self._plan(where, at, pipeline, data_dir, staging)
            # the id's column: the setting, else the source's id field under its own name
            id_column = plan.settings.id_column or column_name(plan.source.id_key())
            previous = tables.setdefault(plan.table_key, (i, id_column))
            if previous[1] != id_column:
                where.fail(
                    (*at, "sink"),
                    f"pipelines {self.pipelines[previous[0]].name!r} and {pipeline.name!r} load "
                    f"{plan.table_key} with different id columns ({previous[1]!r}, "
                    f"{id_column!r})",
                )
            plans.append(plan)
        return plans

    def _plan(
        self,
        where: _Where,
        at: tuple[Any, ...],
        pipeline: PipelineModel,
        data_dir: str,
        staging: str,
    ) -> PipelinePlan:
        """One pipeline resolved and checked, its options over ``defaults``."""
        name = pipeline.name
        options = _merged(self.defaults, pipeline)
        settings = _settings(where, at, name, options, data_dir)
        source = _source(where, (*at, "source"), pipeline.source, self.connections)
        sink, table_key = _sink(where, (*at, "sink"), pipeline.sink, options, self.connections)
        partitions = _partitions(where, at, options.partitions)
        if sink.write_mode == "refresh" and partitions is not None:
            where.fail(
                (*at, "write_mode"),
                "refresh replaces the whole table at each load: give partitions: {type: none}",
            )
        schedule = options.schedule
        if schedule is not None:
            _check_cron(where, (*at, "schedule"), schedule)
        lag = None
        if options.lag is not None:
            lag = _lag(where, (*at, "lag"), options.lag)
            if partitions is None:
                where.fail((*at, "lag"), "lag re-loads recent partitions: give partitions too")
            if schedule is None:
                where.fail((*at, "lag"), "lag needs a schedule (the cron of the re-load)")
        backfill = None
        if options.backfill is not None and options.backfill.type == "multi_run":
            if options.backfill.max_partitions_per_run < 1:
                where.fail((*at, "backfill"), "max_partitions_per_run must be 1 or more")
            backfill = dg.BackfillPolicy.multi_run(options.backfill.max_partitions_per_run)
        for key, value in options.tags.items():
            if key.startswith(TAG_PREFIX):
                where.fail((*at, "tags", key), f"tag {key!r} is set by the pipeline itself")
            if not re.match(r"^[A-Za-z0-9_.-]{0,63}$", value):
                where.fail((*at, "tags", key), f"tag value {value!r}: use letters, digits, _ . -")
        return PipelinePlan(
            name=name,
            source=source,
            sink=sink,
            settings=settings,
            staging_path=staging,
            table_key=table_key,
            partitions_def=partitions,
            backfill_policy=backfill,
            schedule=schedule,
            lag=lag,
            executor=options.executor or "in_process",
            pool=options.pool or pool_name(table_key),
            chain=Chain(
                name,
                options.group or name,
                tuple(options.owners or OWNERS),
                {PIPELINE_TAG: name, **options.tags},
            ),
        )


@dataclass(frozen=True)
class PipelinePlan:
    """One pipeline resolved and checked: its resources, partitions and automation."""

    name: str
    source: Any
    sink: Any
    settings: PipelineSettings
    staging_path: str
    table_key: str
    partitions_def: dg.TimeWindowPartitionsDefinition | None
    backfill_policy: dg.BackfillPolicy | None
    schedule: str | None
    lag: timedelta | None
    executor: ExecutorName
    pool: str
    chain: Chain

    def resources(self) -> dict[str, Any]:
        """The pipeline's resources under its own keys."""
        res = self.chain.resource
        return {
            res("source"): self.source,
            res("sink"): self.sink,
            res("settings"): self.settings,
            res("io_manager"): StagingIOManagerResource(
                base_path=self.staging_path, run_scoped=True
            ),
        }

    def run_tags(self) -> dict[str, str]:
        """What every run of this pipeline's job carries: its id and its targets."""
        return {PIPELINE_TAG: self.name, **target_tags(self.source, self.sink)}

    def _schedule(self, job: Any) -> dg.ScheduleDefinition:
        """On each tick of the cron, the last complete partition (or an unpartitioned run)."""
        partitions = self.partitions_def
        tags = self.run_tags()

        @dg.schedule(
            cron_schedule=str(self.schedule),
            name=f"{self.name}_schedule",
            job=job,
            execution_timezone="UTC",
            tags=tags,
            description=f"Loads the last complete partition of {self.name} on {self.schedule}.",
        )
        def _tick(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
            if partitions is None:
                return dg.RunRequest(tags=tags)
            key = last_complete_partition(partitions, context.scheduled_execution_time)
            if key is None:
                return dg.SkipReason("no complete partition yet")
            return dg.RunRequest(run_key=key, partition_key=key, tags=tags)

        return _tick

    def assets(self) -> list[dg.AssetsDefinition]:
        automation = None
        if self.lag is not None and self.schedule is not None:
            recent: Any = dg.AutomationCondition.in_latest_time_window(lookback_delta=self.lag)
            tick: Any = dg.AutomationCondition.cron_tick_passed(self.schedule, cron_timezone="UTC")
            automation = recent & tick.since_last_handled() & ~dg.AutomationCondition.in_progress()
        return build_assets(
            self.partitions_def,
            hooks=PIPELINE_METRICS_HOOKS,
            backfill_policy=self.backfill_policy,
            chain=self.chain,
            pool=self.pool,
            automation_condition=automation,
        )

    def definitions(self) -> dg.Definitions:
        assets = self.assets()
        job = dg.define_asset_job(
            f"{self.name}_job",
            selection=dg.AssetSelection.assets(*assets),
            partitions_def=self.partitions_def,
            executor_def=_executor(self.executor),
            description=f"Fetch, transform and load pipeline {self.name}.",
            run_tags=self.run_tags(),
        )
        automation = dg.AutomationConditionSensorDefinition(
            f"{self.name}_automation",
            target=dg.AssetSelection.assets(*assets),
            run_tags=self.run_tags(),
            description=f"Re-loads the last {self.lag} of {self.name} on {self.schedule}.",
        )
        unplaced = [build_unplaced_asset(self.chain)] if self.partitions_def else []
        return dg.Definitions(
            assets=[*assets, *unplaced],
            jobs=[job],
            schedules=[self._schedule(job)] if self.schedule and self.lag is None else [],
            sensors=[automation] if self.lag is not None else [],
            resources=self.resources(),
        )


@functools.cache
def shared_pushgateway() -> PushgatewayResource:
    """The one ``pushgateway`` resource the step hooks need; one object, so that several
    components' definitions merge."""
    return pushgateway_resource()


def pushgateway_resource(**fields: Any) -> PushgatewayResource:
    """``PUSHGATEWAY_URL`` (empty: metrics off), ``PIPELINE_ID``, ``PUSHGATEWAY_USERNAME``
    and ``PUSHGATEWAY_PASSWORD`` (an ``EnvVar``: resolved at launch, hidden in the UI)."""
    return PushgatewayResource(
        url=os.environ.get("PUSHGATEWAY_URL", ""),
        pipeline_id=os.environ.get("PIPELINE_ID") or "default",
        username=os.environ.get("PUSHGATEWAY_USERNAME") or None,
        password=env_secret("PUSHGATEWAY_PASSWORD"),
        **fields,
    )


def last_complete_partition(
    partitions: dg.TimeWindowPartitionsDefinition, at: datetime
) -> str | None:
    """The partition that ended last at ``at``: a schedule's tick loads the one just over
    (None before the first one has ended)."""
    with dg.partition_loading_context(effective_dt=at):
        return partitions.get_last_partition_key()


def load_pipelines_file(
    path: str | os.PathLike[str],
) -> list[tuple[EsMysqlPipelines, Path, int]]:
    """The components of a ``defs.yaml`` outside a defs folder (``--defs``,
    ``ES_MYSQL_PIPELINE_DEFS``), each with its file and document index (for ``plans``); a
    folder is searched for its ``defs.yaml`` files."""
    root = Path(path)
    files = sorted(root.rglob("defs.yaml")) if root.is_dir() else [root]
    if not files:
        raise PipelinesConfigError(f"{root}: no defs.yaml in this folder")
    found = []
    for file in files:
        try:
            docs = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise PipelinesConfigError(f"{file}: {_one_line(exc)}") from None
        for i, doc in enumerate(docs):
            kind = str(doc.get("type", "")) if isinstance(doc, dict) else ""
            if kind.rsplit(".", 1)[-1] != EsMysqlPipelines.__name__:
                continue
            try:
                component = EsMysqlPipelines.resolve_from_yaml(
                    yaml.safe_dump(doc.get("attributes") or {}, sort_keys=False),
                    scope=EsMysqlPipelines.get_additional_scope(),
                )
            except Exception as exc:  # pydantic's validation error, Dagster's resolution error
                raise PipelinesConfigError(_validation_line(exc, _Where(file, i))) from None
            found.append((component, file, i))
    if not found:
        raise PipelinesConfigError(
            f"{root}: no component of type es_mysql_pipeline.EsMysqlPipelines"
        )
    return found


def find_pipeline(path: str | os.PathLike[str], name: str) -> PipelinePlan:
    """One pipeline of a ``defs.yaml`` file or folder, by name (the CLI's ``--pipeline``)."""
    plans = {p.name: p for c, file, doc in load_pipelines_file(path) for p in c.plans(file, doc)}
    if name not in plans:
        raise PipelinesConfigError(
            f"{path}: no pipeline named {name!r} (declared: {', '.join(sorted(plans)) or 'none'})"
        )
    return plans[name]


# ---- checks, each failing with the YAML place ------------------------------------------


class _Where:
    """Turns a path in the YAML (``pipelines[2].sink``) into ``file:line: path: message``;
    the path is in the attributes of the file's document ``doc``, which was read before."""

    def __init__(self, yaml_file: Path | None, doc: int = 0) -> None:
        self.file = yaml_file
        docs = list(yaml.compose_all(yaml_file.read_text(encoding="utf-8"))) if yaml_file else []
        self._root: Any = _child(docs[doc], "attributes") if doc < len(docs) else None

    def line(self, path: Sequence[Any]) -> int | None:
        """The line of the deepest node of ``path`` that the YAML has."""
        node, line = self._root, None
        for part in (None, *path):
            if part is not None and isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                node = node.value[part] if part < len(node.value) else None
            elif part is not None:
                node = _child(node, str(part))
            if node is None:
                break
            line = node.start_mark.line + 1
        return line

    def message(self, path: Sequence[Any], what: str) -> str:
        line = self.line(path)
        prefix = f"{self.file}:{line}: " if self.file and line else ""
        return f"{prefix}{_dotted(path)}: {what}"

    def fail(self, path: Sequence[Any], what: str) -> NoReturn:
        raise PipelinesConfigError(self.message(path, what))


def _child(node: Any, key: str) -> Any:
    """The value of ``key`` in a YAML mapping node; None for anything else."""
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if getattr(k, "value", None) == key), None)
    return None


def _dotted(path: Sequence[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _validation_line(exc: BaseException, where: _Where) -> str:
    """The most specific of a validation error's complaints, at its place in the YAML.

    Every field also accepts a ``{{ template }}`` string, so each mistake comes with an
    "Input should be a valid string" twin; the other complaint is the one that helps.
    """
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        # Dagster's resolution error: "<string>:4 - pipelines.0.source.path\n\nUndefinedError: …",
        # a template's value of the wrong type its ValidationError's context
        head, _, detail = str(exc).partition("\n\n")
        path = _yaml_path([head.partition(" - ")[2]])
        inner = getattr(exc.__context__, "errors", None)
        if callable(inner):
            first = inner()[0]
            detail = f"{_dotted(_yaml_path(first['loc']))}: {first['msg']}"
        return where.message(path, _one_line(detail))
    found = errors()
    first = next((e for e in found if "valid string" not in e["msg"]), found[0])
    return where.message(_yaml_path(first["loc"]), first["msg"])


def _yaml_path(loc: Sequence[Any]) -> list[Any]:
    """A pydantic or Dagster error location as a path in the YAML (``pipelines``, 0, …)."""
    path: list[Any] = []
    for part in loc:
        text = re.sub(r"\s+at\s+\S+$", "", str(part))  # Dagster's " at <file>:<line>"
        text = re.sub(r"(tuple|list|dict)\[[^\]]*\]", "", text)
        for token in text.split("."):
            if not token or token in ("str", "int") or re.match(r"^[A-Z]\w*Model$", token):
                continue
            path.append(int(token) if token.isdigit() else token)
    return path


def _merged(defaults: PipelineOptions, pipeline: PipelineModel) -> PipelineOptions:
    """``defaults`` overridden field by field; ``settings`` and ``tags`` merge key by key."""
    values = defaults.model_dump(exclude_unset=True)
    own = pipeline.model_dump(exclude_unset=True, exclude={"name", "source", "sink"})
    for key in ("settings", "tags"):
        own[key] = {**values.get(key, {}), **own.get(key, {})}
    return PipelineOptions.model_validate({**values, **own})


def _check_name(where: _Where, at: tuple[Any, ...], kind: str, name: str) -> None:
    if not NAME.match(name):
        where.fail(at, f"{kind} name {name!r}: letters, digits and _ (a letter first)")


def _check_connection(where: _Where, name: str, conn: ConnectionModel) -> None:
    at = ("connections", name)
    _check_name(where, at, "connection", name)
    if conn.type == "elasticsearch" and not conn.hosts:
        where.fail(at, "an elasticsearch connection needs hosts")
    if conn.type != "elasticsearch" and not conn.url:
        where.fail(at, f"a {conn.type} connection needs url")
    if conn.url and re.search(r"//[^/@:]*:[^/@]*@", conn.url):
        where.fail((*at, "url"), "a password in the url: give its variable's name as password_env")


def _connection(
    where: _Where, at: tuple[Any, ...], name: str, connections: Mapping[str, Any], es: bool
) -> ConnectionModel:
    """The connection a source (``es``) or a database sink names, of the kind it needs."""
    if name not in connections:
        known = ", ".join(sorted(connections)) or "none"
        where.fail(at, f"unknown connection {name!r} (declared: {known})")
    conn: ConnectionModel = connections[name]
    if es and conn.type != "elasticsearch":
        where.fail(at, f"{name!r} is a {conn.type} connection")
    if not es and conn.type == "elasticsearch":
        where.fail(at, f"{name!r} is an elasticsearch cluster")
    return conn


def _env(name: str | None) -> Any:
    return dg.EnvVar(name) if name else None


def env_secret(name: str) -> Any:
    """An ``EnvVar`` (resolved at launch, hidden in the UI) when the variable is set."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _construct(
    where: _Where,
    at: tuple[Any, ...],
    cls: type[BaseModel],
    options: Mapping[str, Any],
    **fields: Any,
) -> Any:
    """``cls`` of the fields the YAML gives (None: not given) and the ``options``."""
    given = {k: v for k, v in fields.items() if v is not None}
    twice = sorted(set(given) & set(options))
    if twice:
        where.fail((*at, "options"), f"{twice[0]!r} is set outside options: drop it from options")
    unknown = sorted(set(options) - set(cls.model_fields))
    if unknown:
        known = ", ".join(sorted(set(cls.model_fields) - set(given)))
        where.fail((*at, "options"), f"{cls.__name__} has no option {unknown[0]!r} ({known})")
    try:
        return cls(**given, **options)
    except ValidationError as exc:  # a mistyped option
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        where.fail(at, f"{cls.__name__}.{field}: {first['msg']}")


def _source(
    where: _Where, at: tuple[Any, ...], model: SourceModel, connections: Mapping[str, Any]
) -> Any:
    if (model.path is None) == (model.connection is None):
        where.fail(at, "give either path (a CSV or JSON Lines file) or connection and index")
    if model.path is not None:
        if model.index or model.query:
            where.fail(at, "index and query are for an elasticsearch connection, not a file")
        return _construct(
            where,
            at,
            FileSource,
            model.options,
            path=model.path,
            id_column=model.id_field,
            timestamp_column=model.time_field,
            format=model.format,
        )
    conn = _connection(where, (*at, "connection"), str(model.connection), connections, es=True)
    if not model.index:
        where.fail(at, "an elasticsearch source needs index (a name or pattern)")
    if model.id_field is not None:
        where.fail((*at, "id_field"), "an elasticsearch record's id is its _id")
    return _construct(
        where,
        at,
        ElasticsearchSource,
        {**conn.options, **model.options},
        hosts=list(conn.hosts),
        index=model.index,
        query=model.query,
        timestamp_field=model.time_field,
        api_key=_env(conn.api_key_env),
        username=conn.username,
        password=_env(conn.password_env),
        ca_certs=conn.ca_certs,
    )


def _sink(
    where: _Where,
    at: tuple[Any, ...],
    model: SinkModel,
    options: PipelineOptions,
    connections: Mapping[str, Any],
) -> tuple[Any, str]:
    given = [k for k in ("connection", "sqlite", "jsonl_dir") if getattr(model, k) is not None]
    if len(given) != 1:
        where.fail(at, "give one of connection (with table), sqlite (with table) or jsonl_dir")
    if model.jsonl_dir is not None:
        sink = _construct(
            where,
            at,
            JsonlSink,
            model.options,
            directory=model.jsonl_dir,
            write_mode=options.write_mode,
        )
        return sink, f"jsonl:{os.path.abspath(model.jsonl_dir)}"
    if not model.table:
        where.fail(at, "a database sink needs table")
    password, extra = None, dict(model.options)
    if model.sqlite is not None:
        url = f"sqlite:///{model.sqlite}"
        key = f"sqlite:{os.path.abspath(model.sqlite)}#{model.table}"
    else:
        conn = _connection(where, (*at, "connection"), str(model.connection), connections, es=False)
        url = str(conn.url)
        key = f"{model.connection}#{model.table}"
        password = _env(conn.password_env)
        extra = {**conn.options, **model.options}
    sink = _construct(
        where,
        at,
        SqlSink,
        extra,
        url=url,
        password=password,
        table=model.table,
        write_mode=options.write_mode,
        schema_contract=options.schema_contract,
    )
    return sink, key


def _settings(
    where: _Where, at: tuple[Any, ...], name: str, options: PipelineOptions, data_dir: str
) -> PipelineSettings:
    fields = dict(options.settings)
    unknown = sorted(set(fields) - set(PipelineSettings.model_fields))
    if unknown:
        known = ", ".join(sorted(set(PipelineSettings.model_fields) - {"pipeline_id"}))
        where.fail((*at, "settings"), f"unknown setting {unknown[0]!r} (settings: {known})")
    if "pipeline_id" in fields:
        where.fail((*at, "settings"), "pipeline_id is the pipeline's name")
    fields.setdefault("dead_letter_dir", os.path.join(data_dir, "dead_letter", name))
    return _construct(where, (*at, "settings"), PipelineSettings, fields, pipeline_id=name)


def _partitions(
    where: _Where, at: tuple[Any, ...], model: PartitionsModel | None
) -> dg.TimeWindowPartitionsDefinition | None:
    if model is None or model.type == "none":
        return None
    hourly = model.type == "hourly"
    dates: dict[str, str | None] = {}
    for field in ("start", "end"):
        text = getattr(model, field)
        try:
            dates[field] = None if text is None else _date(text, hourly)
        except ValueError:
            hint = "YYYY-MM-DD or YYYY-MM-DD-HH:MM" if hourly else "YYYY-MM-DD"
            where.fail((*at, "partitions", field), f"{field} {text!r}: use {hint}")
    kind = dg.HourlyPartitionsDefinition if hourly else dg.DailyPartitionsDefinition
    return kind(start_date=str(dates["start"]), end_date=dates["end"], timezone="UTC")


def _date(text: str, hourly: bool) -> str:
    """``text`` checked; an hourly partition's normalized to ``YYYY-MM-DD-HH:MM``."""
    if not hourly:
        datetime.strptime(text, "%Y-%m-%d")
        return text
    fmt = "%Y-%m-%d-%H:%M" if len(text) > 10 else "%Y-%m-%d"
    return datetime.strptime(text, fmt).strftime("%Y-%m-%d-%H:%M")


def _check_cron(where: _Where, at: tuple[Any, ...], cron: str) -> None:
    try:
        dg.ScheduleDefinition(name="cron_check", cron_schedule=cron, job_name="cron_check")
    except Exception:
        where.fail(at, f"{cron!r} is not a cron schedule (e.g. '15 0 * * *')")


def _lag(where: _Where, at: tuple[Any, ...], text: str) -> timedelta:
    match = LAG.match(text)
    if not match or int(match.group(1)) < 1:
        where.fail(at, f"lag {text!r}: use a number of days or hours, e.g. 2d or 6h")
    n = int(match.group(1))
    return timedelta(days=n) if match.group(2) == "d" else timedelta(hours=n)


@functools.cache
def _executor(name: ExecutorName) -> dg.ExecutorDefinition:
    """One executor object per kind, so that several components' definitions merge."""
    if name != "celery":
        return dg.in_process_executor if name == "in_process" else dg.multiprocess_executor
    from dagster_celery import celery_executor

    return celery_executor.configured(celery_config(), name="celery")


def celery_config() -> dict[str, str]:
    """The celery broker and result backend (``DAGSTER_CELERY_BROKER_URL`` / ``_BACKEND_URL``)."""
    return {
        "broker": os.environ.get("DAGSTER_CELERY_BROKER_URL") or "redis://127.0.0.1:6379/0",
        "backend": os.environ.get("DAGSTER_CELERY_BACKEND_URL") or "redis://127.0.0.1:6379/1",
    }
