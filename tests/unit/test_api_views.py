"""Unit tier: snapshot answers (api/views.py) and the API key cache (api/auth.KeyStore)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from api import auth, views
from api.service import Answer
from qilu.catalog import load_catalog
from storage.queries_api import ApiKeyRow, Area
from tests.contract.test_api import snapshot
from tests.helpers import wait_for


def test_warmed_answers_equal_the_ones_built_on_demand() -> None:
    """warm() cuts every whole-province answer from one coverage list; each must be the
    very bytes the per-request builders produce."""
    cat = load_catalog()
    warmed, lazy = snapshot(), snapshot()
    views.warm(warmed, cat, 2.0)
    whole = Area()
    expected: dict[tuple[object, ...], Answer] = {
        ("status", whole): views.status_answer(lazy, cat, whole, 2.0)
    }
    expected[("coverage", whole, None, None)] = views.coverage_answer(lazy, cat, whole, None, None)
    for code in cat.city_codes:
        expected[("coverage", whole, None, code)] = views.coverage_answer(
            lazy, cat, whole, None, code
        )
    for t in cat.targets:
        expected[("coverage", whole, t.id, None)] = views.coverage_answer(
            lazy, cat, whole, t.id, None
        )
        expected[("one", whole, t.id, None)] = views.one_answer(lazy, cat, whole, t.id, None)
    assert set(warmed.memo) == set(expected)
    for key, answer in expected.items():
        assert warmed.memo[key] == answer, key


def test_answers_carry_a_tag_of_their_bytes() -> None:
    a, b = Answer.of(b'{"x":1}'), Answer.of(b'{"x":2}')
    assert a.etag != b.etag
    assert Answer.of(b'{"x":1}').etag == a.etag  # same bytes, same tag, in any process
    assert a.matches(a.etag)
    assert a.matches(f'"other", W/{a.etag}')
    assert a.matches("*")
    assert not a.matches(b.etag)
    assert not a.matches(None)
    assert views.respond(a, a.etag)[0] == 304
    status, headers = views.respond(a, None)
    assert status == 200
    assert (b"content-length", b"7") in headers


def _row(key_id: str, revoked: bool = False) -> ApiKeyRow:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    return ApiKeyRow(
        key_id=key_id,
        name="t",
        secret_sha256=b"\0" * 32,
        scopes=("coverage:read",),
        cities=(),
        sectors=(),
        rate_per_s=None,
        created_at=now,
        expires_at=None,
        revoked_at=now if revoked else None,
    )


def test_a_key_in_use_is_reread_ahead_of_its_expiry() -> None:
    reads: list[str] = []
    revoked = threading.Event()

    def fetch(key_id: str) -> ApiKeyRow:
        reads.append(key_id)
        return _row(key_id, revoked.is_set())

    store = auth.KeyStore(fetch, cache_s=0.4)
    try:
        assert store.cached("k") == (False, None)  # never read: the caller must load it
        store.load("k")
        assert store.cached("k")[0]
        assert reads == ["k"]  # young entry: no re-read
        revoked.set()

        def reread_shows_revocation() -> bool:
            fresh, row = store.cached("k")  # past half its life, this queues a re-read
            return fresh and row is not None and row.revoked_at is not None

        # the entry is never stale in between, and the re-read brings the revocation
        wait_for(reread_shows_revocation, 5, "a background re-read")
        assert len(reads) >= 2
    finally:
        store.close()


def test_an_entry_is_never_served_past_its_cache_time() -> None:
    store = auth.KeyStore(_row, cache_s=0.05)
    store.close()  # no background re-reads: the entry just ages
    store.load("k")
    wait_for(lambda: not store.cached("k")[0], 5, "the entry to expire")
    assert store.cached("k") == (False, None)


def test_keys_falling_due_together_are_reread_in_one_batch() -> None:
    batches: list[list[str]] = []

    def fetch_many(ids: list[str]) -> dict[str, ApiKeyRow | None]:
        batches.append(sorted(ids))
        return {k: _row(k) for k in ids}

    store = auth.KeyStore(_row, cache_s=0.4, fetch_many=fetch_many)
    try:
        for k in ("a", "b", "c"):
            store.load(k)
        wait_for(lambda: all(store.cached(k)[0] for k in "abc") and bool(batches), 5, "re-read")
        assert batches[0] == ["a", "b", "c"]  # one read for the three
    finally:
        store.close()
