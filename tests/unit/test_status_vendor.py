"""The status page's vendored chart library: one version noted everywhere, its licence kept,
and a page that loads nothing from outside the API (it must work offline)."""

from __future__ import annotations

import re
from pathlib import Path

import api.static

STATIC = Path(api.static.__file__).parent
VENDOR = STATIC / "vendor"


def test_the_uplot_version_agrees_in_the_file_the_note_and_the_readme() -> None:
    noted = (VENDOR / "uplot" / "VERSION").read_text().strip()
    banner = (VENDOR / "uplot" / "uPlot.iife.min.js").read_text()[:200]
    found = re.search(r"uPlot \(v([\d.]+)\)", banner)
    assert found, banner
    assert found.group(1) == noted
    assert f"| {noted} " in (VENDOR / "README.md").read_text()


def test_the_licence_travels_with_the_library() -> None:
    assert (VENDOR / "uplot" / "LICENSE").read_text().startswith("The MIT License")


def test_the_page_loads_only_what_the_api_serves() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"#]+)"', html)
    assets = [r for r in refs if r.startswith("/static/")]
    assert "/static/vendor/uplot/uPlot.iife.min.js" in assets
    assert "/static/vendor/uplot/uPlot.min.css" in assets
    for ref in assets:
        assert (STATIC / ref.removeprefix("/static/")).is_file(), ref
    assert not [r for r in refs if "//" in r], "the page must not load from another host"
