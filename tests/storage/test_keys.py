"""Storage keys: deterministic, and no recording id can escape its directory."""

from __future__ import annotations

import hashlib
import re

import pytest

from storage.keys import check_key, metadata_key, recording_key

_NAME = r"[a-z0-9][a-z0-9_-]*"
_KEY_RE = re.compile(rf"{_NAME}/{_NAME}/[0-9a-f]{{2}}/[A-Za-z0-9_%-]+\.[a-z0-9]+")

# Hostile ids (R22: traversal, NUL, 2 KB, non-ASCII, distinctness) are in
# tests/faults/test_r22_storage_keys.py.


def test_percent_encoding_leaves_only_the_safe_set() -> None:
    assert recording_key("p", "a", "AZaz09_-", "mp3").endswith("/AZaz09_-.mp3")
    assert recording_key("p", "a", "a.b/c%d", "mp3").endswith("/a%2Eb%2Fc%25d.mp3")
    assert recording_key("p", "a", "%2e%2e", "mp3").endswith("/%252e%252e.mp3")
    assert recording_key("p", "a", "\x00", "mp3").endswith("/%00.mp3")
    assert recording_key("p", "a", "é", "mp3").endswith("/%C3%A9.mp3")


def test_long_ids_are_hashed() -> None:
    long_id = "x" * 2048
    key = recording_key("p", "a", long_id, "wav")
    assert key.endswith("/h-" + hashlib.sha256(long_id.encode()).hexdigest() + ".wav")
    # 200 encoded chars is still kept as is; 201 is hashed.
    assert recording_key("p", "a", "y" * 200, "wav").endswith("/" + "y" * 200 + ".wav")
    assert "/h-" in recording_key("p", "a", "y" * 201, "wav")
    # Encoding expansion counts: 67 dots encode to 201 chars.
    assert "/h-" in recording_key("p", "a", "." * 67, "wav")


def test_deterministic_and_distinct() -> None:
    assert recording_key("p", "a", "rec-1", "wav") == recording_key("p", "a", "rec-1", "wav")
    assert recording_key("p", "a", "rec-1", "wav") != recording_key("p", "b", "rec-1", "wav")
    assert recording_key("p", "a", "rec-1", "wav") != recording_key("p", "a", "rec-1", "mp3")


@pytest.mark.parametrize(
    ("provider", "account"),
    [("", "a"), ("P", "a"), ("-p", "a"), ("p/q", "a"), ("p", ".."), ("p", "a" * 65), ("p", "é")],
)
def test_invalid_provider_or_account(provider: str, account: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        recording_key(provider, account, "rec-1", "wav")


@pytest.mark.parametrize("fmt", ["", "WAV", "w.v", "mp3/x", "abcdefghi", "json"])
def test_invalid_format(fmt: str) -> None:
    with pytest.raises(ValueError, match="format"):
        recording_key("p", "a", "rec-1", fmt)


def test_empty_id_refused() -> None:
    with pytest.raises(ValueError, match="recording id"):
        recording_key("p", "a", "", "wav")


def test_metadata_key() -> None:
    audio = recording_key("telnyx", "acct", "rec.1", "mp3")
    meta = metadata_key(audio)
    assert meta == audio[: -len(".mp3")] + ".json"
    assert meta.rsplit("/", 1)[0] == audio.rsplit("/", 1)[0]
    assert metadata_key(audio) == meta
    long_audio = recording_key("telnyx", "acct", "z" * 500, "wav")
    assert metadata_key(long_audio).endswith(".json")


@pytest.mark.parametrize("bad", ["", "p/a/xx/noext", "p/a/xx/x.json", "../x.wav", "/abs/x.wav"])
def test_metadata_key_refuses_non_audio_keys(bad: str) -> None:
    with pytest.raises(ValueError):
        metadata_key(bad)


@pytest.mark.parametrize("bad", ["", "/x", "a//b", "a/./b", "a/../b", "..", "a/", "a\x00b"])
def test_check_key_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        check_key(bad)
