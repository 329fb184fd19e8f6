"""Behaviour of the keyed pseudonym functions and of key files."""

from __future__ import annotations

import pickle
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import KeyFileError
from pipeline.keys import MIN_KEY_BYTES, Keyring

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
UID_RE = re.compile(r"^2\.25\.(0|[1-9][0-9]*)$")
BASE32 = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

uids = st.from_regex(r"\A[1-9][0-9]{0,3}(\.(0|[1-9][0-9]{0,8})){1,12}\Z")
values = st.text(max_size=80)
purposes = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12)


@pytest.fixture
def ring() -> Keyring:
    return Keyring(KEY)


# --- determinism ------------------------------------------------------------------------


def _outputs(ring: Keyring, value: str) -> tuple[object, ...]:
    return (
        ring.uid(value),
        ring.text("name", value, 16),
        ring.digits("id", value, 10),
        ring.offset("date-shift", value, -1095, -1),
        ring.digest("x", value),
        ring.fingerprint,
    )


@pytest.mark.parametrize("value", ["1.2.840.10008.1", "Doe^John", "", "ümlaut", "\udcff"])
def test_same_key_and_value_give_the_same_output_everywhere(ring: Keyring, value: str) -> None:
    fresh = Keyring(bytes(bytearray(KEY)))
    unpickled = pickle.loads(pickle.dumps(ring))
    assert _outputs(ring, value) == _outputs(ring, value)
    assert _outputs(fresh, value) == _outputs(ring, value)
    assert _outputs(unpickled, value) == _outputs(ring, value)


def test_pickle_keeps_the_ephemeral_flag() -> None:
    generated = Keyring.generate()
    assert generated.ephemeral is True
    copy = pickle.loads(pickle.dumps(generated))
    assert copy.ephemeral is True
    assert copy.uid("1.2.3") == generated.uid("1.2.3")
    assert pickle.loads(pickle.dumps(Keyring(KEY))).ephemeral is False


def test_different_keys_give_different_outputs(ring: Keyring) -> None:
    other = Keyring(OTHER_KEY)
    assert other.uid("1.2.3") != ring.uid("1.2.3")
    assert other.text("name", "Doe", 16) != ring.text("name", "Doe", 16)
    assert other.digits("id", "MRN1", 20) != ring.digits("id", "MRN1", 20)
    assert other.fingerprint != ring.fingerprint


def test_generated_keys_differ() -> None:
    assert Keyring.generate().fingerprint != Keyring.generate().fingerprint


@given(a=values, b=values)
def test_different_values_give_different_uids(a: str, b: str) -> None:
    ring = Keyring(KEY)
    assert (ring.uid(a) == ring.uid(b)) == (a == b)


@given(purpose=purposes, value=values)
def test_purposes_are_separate_domains(purpose: str, value: str) -> None:
    ring = Keyring(KEY)
    assert ring.digest(purpose, value) != ring.digest(purpose + "x", value)
    assert ring.digest("a", value) != ring.digest("b", value)


def test_purpose_and_value_cannot_be_shifted_into_each_other(ring: Keyring) -> None:
    assert ring.digest("ab", "c") != ring.digest("a", "bc")


def test_digest_is_hmac_sha256_sized(ring: Keyring) -> None:
    assert len(ring.digest("a", "b")) == 32


# --- uid --------------------------------------------------------------------------------


@given(uid=uids)
def test_uid_gives_a_valid_2_25_uid(uid: str) -> None:
    out = Keyring(KEY).uid(uid)
    assert UID_RE.match(out), out
    assert len(out) <= 64
    assert out != uid


@pytest.mark.parametrize("uid", ["1.2.3", "1.2.840.113619.2.55.3.604688119", "2.25.0"])
def test_uid_is_deterministic_and_under_64_chars(ring: Keyring, uid: str) -> None:
    assert ring.uid(uid) == Keyring(KEY).uid(uid)
    assert len(ring.uid(uid)) <= 64


def test_uid_depends_on_trailing_characters(ring: Keyring) -> None:
    assert ring.uid("1.2.3") != ring.uid("1.2.3 ")


# --- text and digits --------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 4, 8, 16, 32, 51])
def test_text_has_the_requested_length_in_base32(ring: Keyring, length: int) -> None:
    out = ring.text("hash", "Doe^John", length)
    assert len(out) == length
    assert set(out) <= BASE32


@given(value=values, length=st.integers(1, 51))
def test_text_prefixes_are_consistent(value: str, length: int) -> None:
    ring = Keyring(KEY)
    assert ring.text("hash", value, 51).startswith(ring.text("hash", value, length))


@pytest.mark.parametrize("length", [53, 56, 64])
def test_text_never_returns_padding_or_a_short_pseudonym(ring: Keyring, length: int) -> None:
    out = ring.text("hash", "Doe^John", length)
    assert len(out) == length
    assert set(out) <= BASE32


@pytest.mark.parametrize("length", [1, 4, 10, 12, 16, 40, 76])
def test_digits_has_the_requested_length_in_decimal(ring: Keyring, length: int) -> None:
    out = ring.digits("id", "MRN1", length)
    assert len(out) == length
    assert out.isdigit()


@given(value=values, length=st.integers(1, 76))
def test_digits_length_and_alphabet_for_any_value(value: str, length: int) -> None:
    out = Keyring(KEY).digits("id", value, length)
    assert len(out) == length
    assert out.isdigit() and out.isascii()


# --- offset -----------------------------------------------------------------------------


@given(
    value=values,
    low=st.integers(-40000, 40000),
    width=st.integers(0, 40000),
)
def test_offset_is_within_the_closed_range(value: str, low: int, width: int) -> None:
    high = low + width
    out = Keyring(KEY).offset("date-shift", value, low, high)
    assert low <= out <= high


def test_offset_of_a_single_day_range_is_that_day(ring: Keyring) -> None:
    assert ring.offset("date-shift", "P1", -7, -7) == -7


def test_offset_takes_both_ends_and_several_values(ring: Keyring) -> None:
    seen = {ring.offset("date-shift", f"P{i}", 0, 2) for i in range(200)}
    assert seen == {0, 1, 2}


def test_offset_rejects_an_empty_range(ring: Keyring) -> None:
    with pytest.raises(ValueError, match="empty offset range"):
        ring.offset("date-shift", "P1", 5, 4)


# --- key files --------------------------------------------------------------------------


def test_key_file_in_hex_is_read(tmp_path: Path) -> None:
    path = tmp_path / "key.hex"
    path.write_text("  " + KEY.hex() + "\n")
    assert Keyring.from_file(path).uid("1.2.3") == Keyring(KEY).uid("1.2.3")


def test_key_file_in_upper_case_hex_is_read(tmp_path: Path) -> None:
    path = tmp_path / "key.hex"
    path.write_text(KEY.hex().upper())
    assert Keyring.from_file(path).fingerprint == Keyring(KEY).fingerprint


def test_key_file_in_raw_bytes_is_read(tmp_path: Path) -> None:
    raw = bytes(range(200, 240))
    path = tmp_path / "key.bin"
    path.write_bytes(raw)
    assert Keyring.from_file(path).fingerprint == Keyring(raw).fingerprint
    assert Keyring.from_file(path).ephemeral is False


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"abcd" * 7, KEY.hex()[:62].encode(), bytes(range(200, 231))],
    ids=["empty", "newline", "28-raw-bytes", "31-hex-bytes", "31-raw-bytes"],
)
def test_too_short_key_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError, match=str(MIN_KEY_BYTES)):
        Keyring.from_file(path)


def test_too_short_key_is_refused() -> None:
    with pytest.raises(KeyFileError):
        Keyring(bytes(MIN_KEY_BYTES - 1))


def test_missing_key_file_raises_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        Keyring.from_file(tmp_path / "absent")


def test_write_creates_an_owner_only_file_that_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    Keyring(KEY).write(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == KEY.hex()
    assert Keyring.from_file(path).fingerprint == Keyring(KEY).fingerprint


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("keep me")
    with pytest.raises(FileExistsError):
        Keyring(KEY).write(path)
    assert path.read_text() == "keep me"


# --- the key never shows ----------------------------------------------------------------


def test_repr_shows_a_fingerprint_never_the_key() -> None:
    key = bytes.fromhex("a5" * 16 + "5a" * 16)
    ring = Keyring(key)
    text = repr(ring) + str(ring)
    assert ring.fingerprint in text
    assert "ephemeral=False" in text
    for leak in (key.hex(), key.hex().upper(), repr(key), "a5a5a5", "5a5a5a"):
        assert leak not in text
    assert len(ring.fingerprint) == 12


def test_fingerprint_is_not_a_prefix_of_the_key() -> None:
    ring = Keyring(KEY)
    assert not KEY.hex().startswith(ring.fingerprint)
