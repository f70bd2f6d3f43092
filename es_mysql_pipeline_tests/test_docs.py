"""The user docs: every relative link resolves (file and heading), and the README stays short."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [ROOT / "README.md", ROOT / "METRICS.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")]
)

#: ``[text](target)`` and ``![alt](target)``; the target ends at a space (a title) or ``)``.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def prose(text: str, inline_code: bool = False) -> str:
    """The text outside fenced code blocks, and outside inline code spans unless asked."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line if inline_code else re.sub(r"`[^`]*`", "", line))
    return "\n".join(out)


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for line in prose(path.read_text(encoding="utf-8"), inline_code=True).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            found.add(slug)
    return found


def test_the_docs_are_there() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "METRICS.md", "CHANGELOG.md", "docs/architecture.md"} <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in links(doc):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no file {dest.relative_to(ROOT)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_the_checker_sees_a_broken_link(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "# Top\n## The `Sink` (SQL)\n[a](missing.md) [b](#top) `[c](ignored.md)`\n"
        "```\n# not a heading\n[d](no.md)\n```\n"
    )
    assert links(doc) == ["missing.md", "#top"]
    assert anchors(doc) == {"top", "the-sink-sql"}


def test_readme_stays_short() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines < 200, f"README.md has {lines} lines; move detail to docs/"


@pytest.mark.parametrize("name", ["README.md", "docs/configuration.md"])
def test_every_flag_named_is_a_flag_of_the_cli(name: str) -> None:
    from es_mysql_pipeline.cli.parser import build_parser

    known = {s for action in build_parser()._actions for s in action.option_strings}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", (ROOT / name).read_text()))
    assert named, name
    assert not named - known, f"{name} names flags the CLI does not have: {named - known}"


def test_the_readme_names_every_flag() -> None:
    from es_mysql_pipeline.cli.parser import build_parser

    readme = (ROOT / "README.md").read_text()
    missing = [
        action.option_strings[0]
        for action in build_parser()._actions
        if action.option_strings
        and action.option_strings[0] != "-h"
        and not any(re.search(rf"{re.escape(s)}(?![\w-])", readme) for s in action.option_strings)
    ]
    assert not missing, f"README.md's flag table lacks {missing}"


def test_every_environment_variable_read_is_documented() -> None:
    """Each variable the package reads (``os.environ``, ``_env``, ``_secret``, the
    ``*_ENV`` and ``ENV_VAR`` constants) is named in docs/configuration.md."""
    reads = r"os\.environ(?:\.get)?[\[(]|_env\(|_secret\(|_ENV = |ENV_VAR = "
    pattern = re.compile(rf"(?:{reads})\s*\"([A-Z][A-Z0-9_]+)\"")
    read = {
        name
        for path in (ROOT / "es_mysql_pipeline").rglob("*.py")
        for name in pattern.findall(path.read_text(encoding="utf-8"))
    }
    assert {"DB_PASSWORD", "ES_MYSQL_PIPELINE_ENV", "DAGSTER_CELERY_BROKER_URL"} <= read
    documented = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = sorted(name for name in read if f"`{name}`" not in documented)
    assert not missing, f"docs/configuration.md does not name {missing}"


def test_the_pipelines_example_loads(tmp_path: Path) -> None:
    """docs/pipelines.md's defs.yaml is one a user can copy: it loads, with its four chains."""
    from es_mysql_pipeline.definitions import pipelines_defs

    text = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "defs.yaml"
    path.write_text(example.replace("/var/lib/es_mysql_pipeline", str(tmp_path)), "utf-8")
    defs = pipelines_defs(str(path))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for name in ("orders", "clicks", "legacy", "audit"):
        assert {f"{name}/raw", f"{name}/clean", f"{name}/loaded"} <= keys
    assert "orders_automation" in {s.name for s in defs.sensors or []}
    assert "clicks_schedule" in {s.name for s in defs.schedules or []}
