"""Properties of key and prefix validation: what every store can hold, and what none may."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slate_epoch import InvalidKeyError
from slate_epoch._store import validate_key, validate_prefix

# Any character a key may hold: everything but "/" (the separator), backslash and NUL, and no
# surrogates (not UTF-8, so no store could hold them).
_key_char = st.characters(exclude_categories=["Cs"], exclude_characters="/\\\x00")
components = st.text(_key_char, min_size=1, max_size=12).filter(lambda c: c not in (".", ".."))
keys = st.lists(components, min_size=1, max_size=5).map("/".join)


@given(keys)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


@given(keys)
def test_a_valid_key_and_its_folder_form_are_valid_prefixes(key: str) -> None:
    assert validate_prefix(key) == key
    assert validate_prefix(key + "/") == key + "/"


def test_the_empty_prefix_is_valid() -> None:
    assert validate_prefix("") == ""


@st.composite
def keys_with_a_bad_component(draw: st.DrawFn) -> str:
    parts = draw(st.lists(components, min_size=0, max_size=4))
    bad = draw(st.sampled_from(["", ".", ".."]))
    parts.insert(draw(st.integers(0, len(parts))), bad)
    return "/".join(parts)


@st.composite
def keys_with_a_bad_char(draw: st.DrawFn) -> str:
    key = draw(keys)
    char = draw(st.sampled_from(["\\", "\x00"]))
    at = draw(st.integers(0, len(key)))
    return key[:at] + char + key[at:]


@given(st.one_of(keys_with_a_bad_component(), keys_with_a_bad_char()))
def test_keys_with_a_bad_component_or_char_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


@given(keys)
def test_a_leading_or_trailing_slash_is_refused(key: str) -> None:
    for bad in ("/" + key, key + "/"):
        with pytest.raises(InvalidKeyError):
            validate_key(bad)


def _not_folder_form(prefix: str) -> bool:
    return prefix != "" and not prefix.endswith("/")


@given(st.one_of(keys_with_a_bad_component(), keys_with_a_bad_char()))
def test_invalid_key_error_is_a_value_error(key: str) -> None:
    with pytest.raises(ValueError, match=r"key"):
        validate_key(key)


# A prefix may end with one "/" (it then names a folder); leave those out, keep the rest.
@given(st.one_of(keys_with_a_bad_component(), keys_with_a_bad_char()).filter(_not_folder_form))
def test_prefixes_with_a_bad_component_or_char_are_refused(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_prefix(prefix)


@pytest.mark.parametrize("key", ["", "/a", "a//b", "a/./b", "a/../b", "a\\b", "a\x00b", ".", ".."])
def test_examples_of_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


@pytest.mark.parametrize("key", [None, b"a", 1, ["a"]])
def test_non_str_keys_are_refused(key: object) -> None:
    with pytest.raises(InvalidKeyError, match="must be a str"):
        validate_key(key)  # type: ignore[arg-type]


@pytest.mark.parametrize("prefix", ["/", "//", "a//", "/a/", "./", "a/../", "a\\/", "a\x00"])
def test_examples_of_invalid_prefixes(prefix: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_prefix(prefix)
