"""The start-up cache: a hit gives the same result as parsing, a changed source misses,
and a damaged or unwritable cache only costs time."""

from __future__ import annotations

import pickle

import pytest

from tapwatch import cache
from tapwatch.identify import oui, ruleset


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_DIR, str(folder))
    return folder


def _registry(folder, org: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "oui.csv").write_text(
        "Registry,Assignment,Organization Name,Organization Address\n"
        f"MA-L,001B1B,{org},Somewhere\n", encoding="utf-8")


def test_oui_registry_is_cached_and_a_changed_file_is_read_again(cache_dir, tmp_path, monkeypatch):
    registry = tmp_path / "ieee"
    _registry(registry, "Siemens AG")
    monkeypatch.setenv(oui.ENV_DIR, str(registry))
    oui.reset()
    assert oui.lookup("00:1b:1b:01:02:03").organization == "Siemens AG"
    assert len(list(cache_dir.glob("oui-*.pickle"))) == 1
    oui.reset()
    assert oui.lookup("00:1b:1b:01:02:03").organization == "Siemens AG"  # from the cache

    _registry(registry, "Someone Else Ltd")  # other size: the stamp changes
    oui.reset()
    assert oui.lookup("00:1b:1b:01:02:03").organization == "Someone Else Ltd"
    assert len(list(cache_dir.glob("oui-*.pickle"))) == 1  # the stale entry is gone
    oui.reset()


def test_cached_rules_equal_freshly_compiled_ones(cache_dir, monkeypatch):
    fresh = ruleset.load_rules(use_env=False)
    assert list(cache_dir.glob("rules-*.pickle"))
    cached = ruleset.load_rules(use_env=False)
    assert [r.id for r in cached.rules] == [r.id for r in fresh.rules]
    assert [r.conditions for r in cached.rules] == [r.conditions for r in fresh.rules]
    pairs = [(a.regex, b.regex) for r, f in zip(cached.rules, fresh.rules, strict=True)
             for a, b in zip(r.conditions, f.conditions, strict=True) if a.regex is not None]
    assert pairs
    for lazy, compiled in pairs:  # compiled again on first use, to the same pattern
        assert lazy.compiled.pattern == compiled.compiled.pattern
        assert lazy.compiled.flags == compiled.compiled.flags


def test_damaged_entry_is_a_miss(cache_dir):
    key = cache.key_of(["x"])
    cache.store("thing", key, {"a": 1})
    assert cache.load("thing", key) == {"a": 1}
    (cache_dir / f"thing-{key}.pickle").write_bytes(b"\x80\x05not a pickle")
    assert cache.load("thing", key) is None
    (cache_dir / f"thing-{key}.pickle").write_bytes(pickle.dumps([1, 2])[:5])
    assert cache.load("thing", key) is None


def test_empty_setting_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_DIR, "")
    cache.store("thing", "k", 1)
    assert cache.load("thing", "k") is None


def test_unwritable_folder_is_ignored(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(cache.ENV_DIR, str(blocker / "sub"))
    cache.store("thing", "k", 1)  # no exception
    assert cache.load("thing", "k") is None
