"""Firmware version parsing and affected-range semantics, on strings as vendors write them."""

from __future__ import annotations

import pytest

from tapwatch.vulns.versions import bounds_range, parse_range, parse_version


def v(text: str):  # type: ignore[no-untyped-def]
    parsed = parse_version(text)
    assert parsed is not None, text
    return parsed


@pytest.mark.parametrize("low, high", [
    ("V4.2.3", "V4.2.10"),       # numeric, not lexical
    ("2.1.0.18", "2.1.1"),
    ("FW 20.11", "FW 20.12"),
    ("4.03", "5.001"),           # CIP revisions: 4.3 < 5.1
    ("V17", "V17 Update 5"),     # updates and service packs come after the release
    ("V17 Update 5", "V17 Update 12"),
    ("6.9.2", "6.9.2 CU01"),
    ("1.0rc1", "1.0"),           # pre-releases come before it
    ("3.44", "3.44W"),
])
def test_ordering(low: str, high: str) -> None:
    assert v(low) < v(high)
    assert not v(high) < v(low)


def test_prefixes_and_padding_do_not_change_a_version() -> None:
    assert v("V4.2") == v("4.2.0") == v("Version V4.2") == v("FW_4.2")
    assert v("R15B") == v("15b")


@pytest.mark.parametrize("text", ["", "Linux", "The_first_5_digits_of_serial"])
def test_text_without_a_number_is_no_version(text: str) -> None:
    assert parse_version(text) is None


@pytest.mark.parametrize("text, inside, outside", [
    ("All versions < V2.1", ["V2.0.9", "1.0"], ["V2.1", "V2.1.0.1"]),
    (">= V5.0 and < V6.4", ["V5.0", "6.3.9"], ["4.9", "V6.4"]),
    (">=V3.1.39 and < V3.3", ["V3.1.39", "V3.2"], ["V3.1.38", "V3.3.0"]),
    ("vers:all/<V4.3.8", ["V4.3.7"], ["V4.3.8"]),
    ("vers:all/>=V4.5.0<V4.5.2", ["V4.5.1"], ["V4.4", "V4.5.2"]),   # CISA leaves out the |
    (">= 11.2.0 | <= 11.2.6", ["11.2.6"], ["11.2.7", "11.1"]),
    ("V8.3.0.1, V8.6.0 and V8.7.0", ["8.6", "V8.3.0.1"], ["V8.6.1", "8.4"]),
    ("<= 5.001", ["4.03", "5.001"], ["5.002"]),
    ("< V17 Update 5", ["V17 Update 4", "V16"], ["V17 Update 5", "V18"]),
    ("prior to 3.0", ["2.9"], ["3.0"]),
    ("2.0 and earlier", ["2.0"], ["2.0.1"]),
    ("1.0 - 2.0", ["1.0", "2.0"], ["2.1"]),
    ("<V18_Update_2", ["V18 Update 1"], ["V18 Update 2"]),
    ("< V6.4 and >= V5.0", ["V5.5"], ["V6.5", "V4"]),   # bounds in any order
])
def test_ranges(text: str, inside: list[str], outside: list[str]) -> None:
    rng = parse_range(text)
    assert rng is not None and not rng.all_versions
    for x in inside:
        assert rng.contains(v(x)), (text, x)
    for x in outside:
        assert not rng.contains(v(x)), (text, x)


@pytest.mark.parametrize("text", ["vers:all/*", "All versions", "*", "all versions (incl. SIPLUS variants)"])
def test_every_version(text: str) -> None:
    rng = parse_range(text)
    assert rng is not None and rng.all_versions and rng.contains(v("0.1"))


@pytest.mark.parametrize("text", [
    "All versions with Function State (FS) < 11",
    "<=The_first_5_digits_of_serial_No._\"26041\"",
    "4.5 | SP6 (including) and V4.5 SP6 Hotfix 8 (excluding)",
])
def test_text_we_cannot_read_is_not_guessed(text: str) -> None:
    assert parse_range(text) is None


def test_nvd_bounds() -> None:
    rng = bounds_range(start_incl="20.0", end_excl="20.12")
    assert rng is not None
    assert rng.contains(v("FW 20.11")) and not rng.contains(v("FW 20.12")) and not rng.contains(v("19.9"))
    exact = bounds_range(exact="4.2.3")
    assert exact is not None and exact.contains(v("V4.2.3")) and not exact.contains(v("4.2.4"))
    assert bounds_range(end_excl="not a version") is None
