"""The traceability list (qilu/data/traceability.toml) against the catalog: every target
sentence of the five source documents is tracked or out of scope with a reason, and every
catalog target is traced to a sentence."""

from __future__ import annotations

from datetime import date

import pytest

from qilu.catalog import Catalog, load_catalog
from qilu.traceability import Entry, Traceability, load_traceability, problems


def test_the_list_and_the_catalog_agree() -> None:
    trace, catalog = load_traceability(), load_catalog()
    assert problems(trace, catalog) == []
    # all five documents are read; the catalog's measured and reported targets are all traced
    assert {e.document for e in trace.entries} == {"000", "001", "002", "003", "004"}
    assert trace.tracked() == {t.id for t in (*catalog.targets, *catalog.reported)}
    assert all(e.out_of_scope or e.targets for e in trace.entries)


@pytest.mark.parametrize(
    ("document", "value", "target"),
    [
        # the issue's examples: 000 (十四), 001 item 6 and the increment beside the running total
        ("000", 240_000, "telecom-5g-stations-2024"),
        ("000", 10_000, "telecom-key-places-2024"),
        ("000", 1.0, "telecom-islands-5g-2024"),
        ("000", 0.58, "telecom-5g-user-share-2024"),
        ("000", 0.33, "telecom-gigabit-user-share-2024"),
        ("000", 300, "telecom-5g-factories-2024"),
        ("001", 100, "agri-bases-certified-2022"),
        ("003", 400, "agri-bases-2022"),
        ("003", 400, "agri-bases-reported-2022"),
        ("001", 150_000_000, "iot-terminals-reported-2022"),
    ],
)
def test_the_issue_examples_are_tracked(document: str, value: float, target: str) -> None:
    hits = [
        e
        for e in load_traceability().entries
        if e.document == document and target in e.targets and e.value == value
    ]
    assert hits, f"{document}: {value} -> {target} is not traced"


@pytest.mark.parametrize(
    ("document", "words", "due"),
    [
        ("000", "培育省级智能工厂、数字化车间、智能制造场景200个以上", date(2024, 12, 31)),
        ("001", "建设200个以上数字化车间", date(2022, 12, 31)),
        ("001", "30个以上首台套智能制造装备", date(2022, 12, 31)),
        ("003", "建设300个各具特色的智慧社区", date(2021, 12, 31)),
        ("003", "建设30个左右智慧教育先进学校", date(2025, 12, 31)),
    ],
)
def test_review_sentences_are_listed_with_a_verdict(document: str, words: str, due: date) -> None:
    hits = [e for e in load_traceability().entries if e.document == document and words in e.quote]
    assert len(hits) == 1, words
    assert hits[0].due == due
    assert hits[0].targets or hits[0].out_of_scope.strip()


def test_the_comparator_is_what_the_words_mean() -> None:
    cat = load_catalog()
    got = problems(_with([_entry(comparator=">=")]), cat)
    assert got == [
        "000 （十四）: 2024年年底前建成5G基站超过24万个: the words mean >= 超过24万个 but target "
        "telecom-5g-stations-2024 uses >"
    ]
    # 突破25万个 is more than 250,000: the racks target says so
    racks = [e for e in load_traceability().entries if "computing-racks-2022" in e.targets]
    assert {(e.threshold, e.comparator) for e in racks} == {
        ("突破25万个", ">"),
        ("25万个 (2022)", ">="),
    }
    assert next(t for t in cat.reported if t.id == "computing-racks-2022").comparator == ">"
    assert all(e.comparator == ">" for e in racks if not e.comparator_differs)
    with pytest.raises(ValueError, match="which comparator"):
        _entry(comparator=None)


def test_energy_internet_and_charging_platform_items_say_why_not() -> None:
    entries = {e.quote: e for e in load_traceability().entries}
    perception = next(q for q in entries if "电力设备状态全息感知" in q)
    platform = next(q for q in entries if "全省统一的智能充电服务平台" in q)
    assert "no threshold" in entries[perception].out_of_scope
    assert "charging-public-piles-2024" in entries[platform].out_of_scope


def _entry(**kw: object) -> Entry:
    base: dict[str, object] = {
        "document": "000",
        "article": "（十四）",
        "quote": "2024年年底前建成5G基站超过24万个",
        "threshold": "超过24万个",
        "value": 240_000,
        "due": date(2024, 12, 31),
        "comparator": ">",
        "targets": ("telecom-5g-stations-2024",),
    }
    base.update(kw)
    return Entry.model_validate(base)


def _with(entries: list[Entry]) -> Traceability:
    return Traceability(entries=(*load_traceability().entries, *entries))


def test_an_entry_neither_tracked_nor_out_of_scope_fails() -> None:
    got = problems(_with([_entry(targets=(), out_of_scope="  ")]), load_catalog())
    assert len(got) == 1
    assert "neither in the catalog nor out of scope" in got[0]


def test_unknown_target_wrong_threshold_or_due_date_fail() -> None:
    cat = load_catalog()
    assert (
        "unknown target 'telecom-6g'" in problems(_with([_entry(targets=("telecom-6g",))]), cat)[0]
    )
    assert "threshold 250000" in problems(_with([_entry(value=250_000)]), cat)[0]
    assert "due 2025-12-31" in problems(_with([_entry(due=date(2025, 12, 31))]), cat)[0]
    assert "unknown document" in problems(_with([_entry(document="009")]), cat)[0]


def test_a_catalog_target_without_a_sentence_fails() -> None:
    trace = load_traceability()
    kept = tuple(e for e in trace.entries if "telecom-5g-factories-2024" not in e.targets)
    got = problems(Traceability(entries=kept), load_catalog())
    assert got == [
        "target telecom-5g-factories-2024 is traced to no sentence of the source documents"
    ]


def test_an_entry_cannot_be_both_tracked_and_out_of_scope() -> None:
    with pytest.raises(ValueError, match="not both"):
        _entry(out_of_scope="because")


def test_reported_targets_load_with_their_links() -> None:
    cat = load_catalog()
    assert {r.id for r in cat.reported_for("iot-terminals-2022")} == {"iot-terminals-reported-2022"}
    for r in cat.reported:
        assert r.reporter, r.id
        assert r.unit_en, r.id
        assert r.unit_zh, r.id
        assert cat.documents[r.source.document].title
    data = cat.model_dump()
    data["reported"][0]["measured"] = "no-such-target"
    with pytest.raises(ValueError, match="unknown measured target"):
        Catalog.model_validate(data)
    data["reported"][0]["measured"] = None
    data["reported"][0]["id"] = cat.targets[0].id
    with pytest.raises(ValueError, match="duplicate target id"):
        Catalog.model_validate(data)
