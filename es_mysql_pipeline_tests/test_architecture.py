"""docs/architecture.md's layer rule, checked against the imports: no module imports a layer
above its own, and the engines import no Dagster."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "es_mysql_pipeline"

#: Layers from the top, by module prefix (the first match wins); metrics sit beside all.
LAYERS = [
    ("entry points", ("definitions", "cli", "component", "jobs", "__main__", "defs", "")),
    ("Dagster glue", ("assets", "hooks", "sensors", "io_manager", "targets")),
    ("resources", ("resources",)),
    (
        "engines",
        (
            "staging", "transform_engine", "mapping", "load_engine", "load_encoding",
            "worker_processes", "readers", "writers", "dead_letter",
        ),
    ),
    (
        "shared vocabulary",
        ("records", "errors", "identifiers", "lifecycle", "metadata_keys", "json_codec",
         "value_types", "sample_data"),
    ),
]  # fmt: skip
ENGINES = LAYERS[3][1]


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(p for p in parts if p != "__init__")


def _layer(module: str) -> int | None:
    if module.startswith("metrics"):
        return None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix and (module == prefix or module.startswith(prefix + ".")):
                return i
    return 0 if module == "" else None


def _imports(path: Path) -> set[str]:
    """Package modules a file imports (``from es_mysql_pipeline import lifecycle`` included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "es_mysql_pipeline":
                out.update(alias.name for alias in node.names)
            elif node.module.startswith("es_mysql_pipeline."):
                out.add(node.module.removeprefix("es_mysql_pipeline."))
        elif isinstance(node, ast.Import):
            out.update(
                a.name.removeprefix("es_mysql_pipeline.")
                for a in node.names
                if a.name.startswith("es_mysql_pipeline.")
            )
    return out


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        module = _name(path)
        mine = _layer(module)
        if mine is None:
            continue
        for target in _imports(path):
            theirs = _layer(target)
            if theirs is not None and theirs < mine:
                wrong.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not wrong, wrong


def test_the_engines_import_no_dagster() -> None:
    for path in PACKAGE.rglob("*.py"):
        module = _name(path)
        if _layer(module) == 3 and module.split(".")[0] in ENGINES:
            names = {n.split(".")[0] for n in _imports_all(path)}
            assert "dagster" not in names, module


def _imports_all(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out
