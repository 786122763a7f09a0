"""The README and docs/: short README, links that resolve, a configuration table that matches conf/, no machine paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "results").glob("*/*.md"))]
GROUPS = ("task", "strategy", "method", "model", "trainer", "logger", "hparams_search")


def _prose(md: Path) -> list[tuple[int, str]]:
    """The lines of a page outside code blocks, numbered."""
    lines, code = [], False
    for i, line in enumerate(md.read_text().splitlines(), 1):
        if line.startswith("```"):
            code = not code
        elif not code:
            lines.append((i, line))
    return lines


def _anchors(md: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for _, line in _prose(md) if (m := re.match(r"#+ (.+)", line))}


def test_readme_is_short():
    assert len(README.read_text().splitlines()) <= 300


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    bad = []
    for i, line in _prose(page):
        for link in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"[a-z]+:", link):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists() or (anchor and target.suffix == ".md" and anchor not in _anchors(target)):
                bad.append(f"line {i}: {link}")
    assert not bad, bad


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_machine_paths(page):
    assert not re.findall(r"(?<![\w.])/(?:work|root|home|tmp)/\S*", page.read_text())


def test_configuration_table_matches_conf():
    rows = {m.group(1): line for _, line in _prose(README) if (m := re.match(r"\| `([\w.]+)` \|", line))}
    defaults = {}
    for entry in yaml.safe_load((ROOT / "conf" / "train.yaml").read_text())["defaults"]:
        if isinstance(entry, dict):
            (key, value), = entry.items()
            defaults[key.removeprefix("optional ")] = value
    for group in GROUPS:
        assert group in rows, f"the README's configuration table has no row for {group}"
        options, default = rows[group].split(" | ")[1], rows[group].rstrip(" |").split(" | ")[-1]
        named = set(re.findall(r"\b\w+\b", options))
        missing = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")} - named
        assert not missing, f"{group}: {missing} are in conf/{group}/ but not in the README"
        want = defaults[group] if defaults[group] is not None else "none"
        assert default.split(",")[0].strip(" `") == want, f"{group}: README says {default}, conf/train.yaml {want}"
    table = "\n".join(line for _, line in _prose(README) if line.startswith("| `"))
    train = yaml.safe_load((ROOT / "conf" / "train.yaml").read_text())
    keys = [k for k, v in train.items() if k != "defaults" and not isinstance(v, dict)]
    keys += [f"data.{k}" for f in ("source", "glue") for k in yaml.safe_load((ROOT / "conf" / "data" / f"{f}.yaml")
             .read_text()) if k != "defaults"]
    assert not [k for k in keys if f"`{k}`" not in table], "conf/train.yaml keys missing from the README's table"
