"""API keys on SQLite and a real PostgreSQL server: stored hashed, looked up, revoked."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import Engine, select

from gateway.storage.keys import KEY_PREFIX, KeyStore, hash_key, new_plaintext_key
from gateway.storage.tables import api_keys
from tests.gateway.storage import Db, db, migrated  # noqa: F401


def reference_hash(plaintext: str) -> str:
    """Reference twin of hash_key, written independently of it."""
    h = hashlib.new("sha256")
    h.update(bytes(plaintext, "utf-8"))
    return "".join(f"{b:02x}" for b in h.digest())


def test_hash_key_matches_reference_and_known_vector() -> None:
    assert hash_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    for s in ["", "tdm-x", "ключ", new_plaintext_key()]:
        assert hash_key(s) == reference_hash(s)


def test_plaintext_keys_are_random_and_well_formed() -> None:
    keys = {new_plaintext_key() for _ in range(200)}
    assert len(keys) == 200
    for k in keys:
        assert k.startswith(KEY_PREFIX)
        body = k[len(KEY_PREFIX):]
        assert len(body) == 43  # 32 bytes in unpadded URL-safe base64
        assert set(body) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_keys_are_stored_hashed_only(migrated: Engine) -> None:  # noqa: F811
    store = KeyStore(migrated)
    plain, key = store.create(name="alice", budget_usd=5.0, rpm=60, tpm=10_000, log_prompts=False)
    with migrated.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(select(api_keys))]
    assert len(rows) == 1
    assert rows[0]["key_hash"] == reference_hash(plain)
    body = plain[len(KEY_PREFIX):]
    for value in rows[0].values():  # no column holds the key or a large piece of it
        assert plain not in str(value) and body[:16] not in str(value)
    got = store.lookup(plain)
    assert got == key
    assert (got.budget_usd, got.rpm, got.tpm, got.log_prompts, got.revoked) == (5.0, 60, 10_000, False, False)


def test_lookup_and_revoke(migrated: Engine) -> None:  # noqa: F811
    store = KeyStore(migrated)
    a_plain, a = store.create(name="a")
    b_plain, b = store.create()
    assert a.id != b.id and a_plain != b_plain
    assert store.lookup(a_plain).id == a.id
    assert store.lookup(b_plain).id == b.id
    assert store.lookup(a_plain + "x") is None
    assert store.lookup("") is None
    assert store.lookup(hash_key(a_plain)) is None  # the stored hash is not itself a key
    assert store.revoke(a.id) is True
    assert store.lookup(a_plain) is None
    assert store.lookup(b_plain).id == b.id
    assert store.revoke("key_missing") is False
    listed = {k.id: k.revoked for k in store.list()}
    assert listed == {a.id: True, b.id: False}
    assert [k.id for k in store.list(include_revoked=False)] == [b.id]
    assert store.get(a.id).revoked is True and store.get("nope") is None


def test_create_rejects_bad_limits(migrated: Engine) -> None:  # noqa: F811
    store = KeyStore(migrated)
    with pytest.raises(ValueError):
        store.create(rpm=0)
    with pytest.raises(ValueError):
        store.create(budget_usd=-1.0)
    with pytest.raises(ValueError):
        store.create(budget_usd=float("nan"))
    assert store.list() == []


def test_update_changes_given_fields_only(migrated: Engine) -> None:  # noqa: F811
    from gateway.storage.keys import UNCHANGED

    store = KeyStore(migrated)
    plain, key = store.create(name="a", budget_usd=5.0, rpm=10)
    got = store.update(key.id, budget_usd=0.5, name="b")
    assert (got.name, got.budget_usd, got.rpm, got.tpm, got.log_prompts) == ("b", 0.5, 10, None, True)
    got = store.update(key.id, rpm=None, log_prompts=False)  # None clears a limit
    assert (got.budget_usd, got.rpm, got.log_prompts) == (0.5, None, False)
    assert store.update(key.id) == got and store.update(key.id, tpm=UNCHANGED) == got
    assert store.lookup(plain) == got
    assert store.update("key_missing", rpm=3) is None
    for bad in ({"rpm": 0}, {"budget_usd": -1.0}, {"budget_usd": float("inf") * 0}, {"log_prompts": None}):
        with pytest.raises(ValueError):
            store.update(key.id, **bad)
    assert store.get(key.id) == got
    store.revoke(key.id)
    assert store.update(key.id, name="c").revoked is True  # a revoked key stays revoked


def test_to_json_holds_no_secret(migrated: Engine) -> None:  # noqa: F811
    store = KeyStore(migrated)
    plain, key = store.create(name="n", tpm=5)
    j = key.to_json()
    assert set(j) == {"id", "object", "name", "created_at", "budget_usd", "rpm", "tpm", "log_prompts", "revoked"}
    assert plain not in str(j) and hash_key(plain) not in str(j)
