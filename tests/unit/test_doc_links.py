"""Every link and citation in the tree leads somewhere.

- a relative Markdown link (``[text](path)``, ``[text](path#anchor)``) names a file or folder
  that exists, and an anchor into a Markdown file names one of its headings (GitHub's slugs);
- a path under ``docs/`` cited anywhere (code, comments, SQL, configuration, Markdown) exists;
  ``docs/adr/NNNN`` alone must be the number of an ADR;
- ``ADR NNNN`` names an ADR that exists;
- a file of the tree named in a Markdown page (``storage/writer.py``, ``bench/ingest.py``...)
  exists, so a page cannot keep naming a file that moved (outputs of runs under
  ``bench/results/`` and templates such as ``NNN_name.sql`` excepted).

Links to the web are not fetched (the tests run offline).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from qilu.settings import REPO_ROOT

TEXT_SUFFIXES = {".md", ".py", ".toml", ".yml", ".yaml", ".sql", ".sh", ".cfg", ".ini", ".txt",
                 ".json", ".html", ".js", ".service"}  # fmt: skip
MD_LINK = re.compile(  # [text](target "title") and ![alt](image)
    r"(?<!!)\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]\n]*\]\(([^)\s]+)\)"
)
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
DOCS_PATH = re.compile(r"(?<![\w/.-])docs/[\w./-]*[\w/]")
ADR_CITE = re.compile(r"\bADRs? ?(\d{4})\b")
TOP_FOLDERS = ("qilu", "ops", "stream", "storage", "api", "dashboards", "collectors", "edge-agent",
               "interconnect", "bench", "scripts", "tests", "docs", "infra", ".ci")  # fmt: skip
_TOPS = "|".join(re.escape(t) for t in TOP_FOLDERS)
TREE_PATH = re.compile(
    rf"(?<![\w/.-])(?:{_TOPS})/[\w./-]*\.(?:py|md|sql|toml|json|ya?ml|sh|html|js|csv|service)\b"
)
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def _tree() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    files = [REPO_ROOT / line for line in out.splitlines() if line]
    return [
        f for f in files
        if (f.suffix in TEXT_SUFFIXES or f.name in {"Makefile", "Dockerfile"})
        and f.is_file() and "vendor" not in f.parts and "node_modules" not in f.parts
    ]  # fmt: skip


@cache
def _adr_numbers() -> frozenset[str]:
    return frozenset(p.name[:4] for p in (REPO_ROOT / "docs" / "adr").glob("[0-9]*.md"))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation dropped, spaces
    to hyphens (letters of any script kept)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


@cache
def _anchors(path: Path) -> frozenset[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def _links(path: Path) -> Iterator[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = INLINE_CODE.sub("", text)
    for m in MD_LINK.finditer(text):
        yield m.group(1) or m.group(2)


def _broken_link(source: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
        return None  # http:, https:, mailto: ...: not fetched
    where, _, anchor = target.partition("#")
    dest = (source.parent / where).resolve() if where else source
    if not dest.exists():
        return f"{where}: no such file"
    if anchor and dest.suffix == ".md" and anchor.lower() not in _anchors(dest):
        return f"#{anchor}: no such heading in {dest.relative_to(REPO_ROOT)}"
    return None


def _broken_citations(text: str) -> Iterator[str]:
    for m in DOCS_PATH.finditer(text):
        cited = m.group(0).rstrip(".")
        if (REPO_ROOT / cited).exists():
            continue
        number = re.fullmatch(r"docs/adr/(\d{4})", cited)
        if number and number.group(1) in _adr_numbers():
            continue
        yield f"{cited}: no such file"
    for m in ADR_CITE.finditer(text):
        if m.group(1) not in _adr_numbers():
            yield f"ADR {m.group(1)}: no such ADR in docs/adr"


def _missing_tree_paths(text: str, folder: Path = REPO_ROOT) -> Iterator[str]:
    """Files named in ``text`` that exist neither from the root nor from ``folder`` (a page's
    own folder: a collector's README names ``tests/test_codec.py``, its own tests)."""
    for m in TREE_PATH.finditer(text):
        named = m.group(0)
        if named.startswith("bench/results/") or "NNN" in named:
            continue  # written by a run / a pattern, not a file of the tree
        if not (REPO_ROOT / named).exists() and not (folder / named).exists():
            yield f"{named}: no such file"


def test_the_checker_finds_what_is_broken(tmp_path: Path) -> None:
    """The checks can fail: a missing file, a missing heading, a cited path and ADR number that
    do not exist are reported; what exists is not."""
    page = REPO_ROOT / "docs" / "storage.md"
    assert _broken_link(page, "adr/0001-wire-format.md") is None
    assert _broken_link(page, "adr/0999-nothing.md") == "adr/0999-nothing.md: no such file"
    assert _broken_link(page, "https://example.org/x") is None
    heading = sorted(_anchors(page))[0]
    assert _broken_link(page, f"#{heading}") is None
    assert "no such heading" in (_broken_link(page, "#no-such-heading-here") or "")
    cited = "see docs/adr/0003 and docs/adr/0999, docs/nothing.md, ADR 0998"
    found = list(_broken_citations(cited))
    assert found == [
        "docs/adr/0999: no such file",
        "docs/nothing.md: no such file",
        "ADR 0998: no such ADR in docs/adr",
    ]
    assert list(_missing_tree_paths("`storage/writer.py`, `stream/nothing.py`")) == [
        "stream/nothing.py: no such file"
    ]
    assert slug("The `qilu run` walk-through (5 min)") == "the-qilu-run-walk-through-5-min"
    assert slug("覆盖率 Coverage") == "覆盖率-coverage"


def test_every_markdown_link_resolves() -> None:
    broken = [
        f"{md.relative_to(REPO_ROOT)}: {problem}"
        for md in _tree() if md.suffix == ".md"
        for target in _links(md)
        if (problem := _broken_link(md, target))
    ]  # fmt: skip
    assert not broken, "\n".join(broken)


@pytest.mark.parametrize("kind", ["docs paths", "ADR numbers"])
def test_every_cited_doc_and_adr_exists(kind: str) -> None:
    broken: list[str] = []
    for path in _tree():
        if path.name == Path(__file__).name:
            continue  # this file's own examples of broken citations
        text = path.read_text(encoding="utf-8", errors="replace")
        broken.extend(
            f"{path.relative_to(REPO_ROOT)}: {problem}"
            for problem in _broken_citations(text)
            if problem.startswith("ADR") == (kind == "ADR numbers")
        )
    assert not broken, "\n".join(broken)


def test_every_file_a_page_names_exists() -> None:
    broken = [
        f"{md.relative_to(REPO_ROOT)}: {problem}"
        for md in _tree() if md.suffix == ".md"
        for problem in _missing_tree_paths(md.read_text(encoding="utf-8"), md.parent)
    ]  # fmt: skip
    assert not broken, "\n".join(broken)
