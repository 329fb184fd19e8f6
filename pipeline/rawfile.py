"""Read and write DICOM Part 10 files as bytes, for the de-identification fast path.

The parser turns a file in Explicit VR Little Endian into a tree of :class:`Element`
records that point into the file's bytes; nothing is decoded until someone asks. The
encoder writes elements back, copying every untouched element as the bytes it was.

Anything outside that narrow, common case raises :class:`Unsupported`, and the caller
takes the general path (pydicom); the fast path never guesses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.uid import UID

from pipeline.values import ascii_strings

__all__ = [
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "Element",
    "RawFile",
    "Unsupported",
    "encode_element",
    "encode_numbers",
    "encode_strings",
    "implicit_vr",
    "parse_file",
    "strings",
]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
_MAGIC = b"DICM"
_PREAMBLE = 128
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQUENCE_END = 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
#: Explicit VRs with a 2-byte reserved field and a 4-byte length.
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT",
                       "UV"})
_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN",
                  "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"}) | _LONG_VRS
#: Binary number VRs and the size of one value (pydicom refuses other lengths).
NUMBER_SIZES = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "UV": 8, "SV": 8, "AT": 4}
_NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "UV": "Q",
                   "SV": "q"}
#: Nesting deeper than this is refused (a hostile file must not exhaust the stack).
MAX_DEPTH = 32

_HEADER = struct.Struct("<HH2sH")
_LONG_LENGTH = struct.Struct("<I")
_TAG_LENGTH = struct.Struct("<HHI")


class Unsupported(Exception):
    """The file is outside what the fast path handles; use the general path."""


@dataclass(slots=True)
class Element:
    """One element of a parsed file: where its bytes are, and its items if a sequence.

    Attributes
    ----------
    tag, vr
        Tag as an int and VR as written in the file.
    start, value_start, end
        Offsets of the element's header, its value and the end of the element.
    items
        For a sequence, each item's elements; for encapsulated Pixel Data, an empty
        list (its fragments are copied as they are); None otherwise.
    """

    tag: int
    vr: str
    start: int
    value_start: int
    end: int
    items: list[list[Element]] | None = None


@dataclass(slots=True)
class RawFile:
    """A parsed Part 10 file: its bytes, file meta elements and dataset elements."""

    data: bytes
    meta: list[Element]
    elements: list[Element]
    transfer_syntax: str
    implicit: bool = False

    def value(self, element: Element) -> bytes:
        """The value bytes of a non-sequence element."""
        return self.data[element.value_start:element.end]

    def raw(self, element: Element) -> bytes:
        """The whole element (header and value) as written in the file."""
        return self.data[element.start:element.end]


def parse_file(data: bytes) -> RawFile:
    """Parse a Part 10 file in Explicit or Implicit VR Little Endian.

    Raises
    ------
    Unsupported
        For anything else: no DICM prefix, another transfer syntax, undefined-length
        values other than sequences and encapsulated Pixel Data, encapsulated items that
        do not parse, elements out of order or cut short; in implicit VR, a VR that
        pydicom would have to guess or resolve from context (see :func:`implicit_vr`).
    """
    if len(data) < _PREAMBLE + 4 or data[_PREAMBLE:_PREAMBLE + 4] != _MAGIC:
        raise Unsupported("no DICM prefix")
    meta_parser = _Parser(data, implicit=False)
    meta: list[Element] = []
    position = _PREAMBLE + 4
    while position + 8 <= len(data) and data[position:position + 2] == b"\x02\x00":
        element, position = meta_parser.element(position, len(data), 0, {})
        meta.append(element)
    syntax = next((e for e in meta if e.tag == 0x00020010), None)
    if syntax is None:
        raise Unsupported("no transfer syntax")
    value = data[syntax.value_start:syntax.end].rstrip(b"\x00 ")
    transfer_syntax = value.decode("ascii", "replace")
    implicit = transfer_syntax == IMPLICIT_LE
    encapsulated = not implicit and _encapsulated(transfer_syntax)
    elements, _ = _Parser(data, implicit).elements(position, len(data), 0, top=True)
    pixels = next((e for e in elements if e.tag == _PIXEL_DATA), None)
    if pixels is not None and (pixels.items == []) != encapsulated:
        raise Unsupported("pixel data encoding does not match the transfer syntax")
    return RawFile(data, meta, elements, transfer_syntax, implicit)


def _encapsulated(transfer_syntax: str) -> bool:
    """Whether ``transfer_syntax`` is an encapsulated one (else Explicit VR LE) or refuse it."""
    if transfer_syntax == EXPLICIT_LE:
        return False
    uid = UID(transfer_syntax)
    if (uid.is_transfer_syntax and uid.is_encapsulated and uid.is_little_endian
            and not uid.is_implicit_VR and not uid.is_deflated):
        return True
    raise Unsupported("transfer syntax")


def implicit_vr(tag: int, creators: dict[int, bytes], pixel_representation: int | None
                ) -> str:
    """The VR pydicom gives an element read in implicit VR, where that is certain.

    Public tags take their dictionary VR (group lengths UL); private creators LO;
    private data elements the private dictionary's VR for their creator, else UN. The
    ambiguous ``US or SS`` is resolved by a Pixel Representation read before it at the
    same level, implicit Pixel Data is OW; anything else ambiguous or unknown is
    refused.
    """
    element = tag & 0xFFFF
    if (tag >> 16) & 1:
        if 0x10 <= element <= 0xFF:
            return "LO"
        creator = creators.get((tag & 0xFFFF0000) | (element >> 8)) if element >> 8 else None
        if not creator:
            return "UN"
        if b"\\" in creator or not creator.isascii():
            raise Unsupported("private creator value")
        try:
            vr = private_dictionary_VR(tag, creator.decode("ascii").rstrip("\x00 "))
        except KeyError:
            return "UN"
    else:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            if element == 0:
                return "UL"
            raise Unsupported("element not in the dictionary") from None
    if vr == "US or SS" and pixel_representation is not None:
        return "US" if pixel_representation == 0 else "SS"
    if vr == "OB or OW" and tag == _PIXEL_DATA:
        return "OW"
    if vr not in _VRS:
        raise Unsupported("ambiguous VR")
    return vr


class _Parser:
    """Parses the elements of one file (explicit or implicit VR, little endian)."""

    def __init__(self, data: bytes, implicit: bool) -> None:
        self.data, self.implicit = data, implicit

    def element(self, position: int, end: int, depth: int, creators: dict[int, bytes],
                pixel_representation: int | None = None) -> tuple[Element, int]:
        """Parse the element at ``position``; return it and where the next one starts."""
        data = self.data
        if position + 8 > end:
            raise Unsupported("cut short")
        if self.implicit:
            group, number, length = _TAG_LENGTH.unpack_from(data, position)
            tag = group << 16 | number
            if group == 0xFFFE:
                raise Unsupported("delimiter out of place")
            vr = implicit_vr(tag, creators, pixel_representation if not depth else None)
            value_start = position + 8
        else:
            group, number, vr_bytes, short = _HEADER.unpack_from(data, position)
            tag = group << 16 | number
            if group == 0xFFFE:
                raise Unsupported("delimiter out of place")
            vr = vr_bytes.decode("latin-1")
            if vr not in _VRS:
                raise Unsupported("VR")
            if vr in _LONG_VRS:
                if position + 12 > end:
                    raise Unsupported("cut short")
                (length,) = _LONG_LENGTH.unpack_from(data, position + 8)
                value_start = position + 12
            else:
                length, value_start = short, position + 8
        if vr == "SQ":
            items, stop = self.items(value_start, length, end, depth + 1)
            return Element(tag, vr, position, value_start, stop, items), stop
        if length == _UNDEFINED:
            if tag != _PIXEL_DATA or depth or vr != "OB" or self.implicit:
                raise Unsupported("undefined length value")
            stop = _fragments(data, value_start, end)
            return Element(tag, vr, position, value_start, stop, []), stop
        stop = value_start + length
        if stop > end:
            raise Unsupported("cut short")
        return Element(tag, vr, position, value_start, stop), stop

    def elements(self, position: int, end: int, depth: int, top: bool = False,
                 delimited: bool = False) -> tuple[list[Element], int]:
        """Parse elements up to ``end`` (or an item delimiter when ``delimited``).

        Tags must ascend, none repeated. Returns the elements and where parsing stopped
        (after the delimiter, when delimited).
        """
        if depth > MAX_DEPTH:
            raise Unsupported("nested too deep")
        found: list[Element] = []
        creators: dict[int, bytes] = {}
        pixel_representation: int | None = None
        previous = -1
        while True:
            if delimited:
                if position + 8 > end:
                    raise Unsupported("cut short")
                if _TAG_LENGTH.unpack_from(self.data, position)[:2] == (0xFFFE, 0xE00D):
                    return found, position + 8
            elif position >= end:
                return found, position
            element, position = self.element(position, end, depth, creators,
                                             pixel_representation)
            tag = element.tag
            if tag <= previous or (top and tag >> 16 == 2):
                raise Unsupported("elements out of order")
            previous = tag
            found.append(element)
            if (tag >> 16) & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
                creators[tag] = self.data[element.value_start:element.end]
            elif tag == 0x00280103 and element.end - element.value_start == 2:
                pixel_representation = struct.unpack_from("<H", self.data,
                                                          element.value_start)[0]

    def items(self, position: int, length: int, end: int, depth: int
              ) -> tuple[list[list[Element]], int]:
        """Parse a sequence's items; return them and the end of the sequence."""
        limit = end if length == _UNDEFINED else position + length
        if limit > end:
            raise Unsupported("cut short")
        items: list[list[Element]] = []
        while True:
            if position == limit and length != _UNDEFINED:
                return items, position
            if position + 8 > limit:
                raise Unsupported("cut short")
            group, number, item_length = _TAG_LENGTH.unpack_from(self.data, position)
            tag = group << 16 | number
            position += 8
            if tag == _SEQUENCE_END and length == _UNDEFINED:
                return items, position
            if tag != _ITEM:
                raise Unsupported("not an item")
            if item_length == _UNDEFINED:
                item, position = self.elements(position, limit, depth, delimited=True)
            else:
                if position + item_length > limit:
                    raise Unsupported("cut short")
                item, _ = self.elements(position, position + item_length, depth)
                position += item_length
            items.append(item)


def _fragments(data: bytes, position: int, end: int) -> int:
    """Walk encapsulated pixel data's items; return the end of its sequence delimiter.

    Refuses (``Unsupported``) what the reader refuses: items that do not parse and
    pixel data without any frame data.
    """
    frame_data = False
    while True:
        if position + 8 > end:
            raise Unsupported("cut short")
        group, number, length = _TAG_LENGTH.unpack_from(data, position)
        position += 8
        if (group, number) == (0xFFFE, 0xE0DD):
            if not frame_data:
                raise Unsupported("no frame data")
            return position
        if (group, number) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            raise Unsupported("encapsulated item")
        frame_data = frame_data or length > 0
        position += length
        if position > end:
            raise Unsupported("cut short")


def strings(value: bytes, vr: str) -> list[str]:
    """The string values of ``value`` as :func:`pipeline.values.element_strings` reads them.

    Raises
    ------
    Unsupported
        When the bytes are not pure ASCII (the character set would matter).
    """
    if not value.isascii():
        raise Unsupported("non-ASCII text")
    return ascii_strings(value, vr)


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes:
    if implicit:
        return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, length)
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr.encode(), length)
    if length > 0xFFFF:
        raise Unsupported("value too long for its VR")
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), length)


def encode_element(tag: int, vr: str, value: bytes, implicit: bool = False) -> bytes:
    """One element, Explicit (or Implicit) VR Little Endian, with an even-length ``value``."""
    return _header(tag, vr, len(value), implicit) + value


def encode_strings(values: list[str] | str | None, vr: str) -> bytes:
    """String values as pydicom writes them: joined by backslashes, padded to even length.

    Raises
    ------
    Unsupported
        When a value is not ASCII (its encoding would depend on the character set).
    """
    if values is None:
        return b""
    text = values if isinstance(values, str) else "\\".join(values)
    if not text.isascii():
        raise Unsupported("non-ASCII text")
    encoded = text.encode("ascii")
    if len(encoded) % 2:
        encoded += b"\x00" if vr == "UI" else b" "
    return encoded


def encode_numbers(value: object, vr: str) -> bytes:
    """A single binary value (a dummy number, an AT tag or bytes)."""
    if isinstance(value, bytes):
        return value + (b"\x00" if len(value) % 2 else b"")
    if vr == "AT":
        number = int(value)  # type: ignore[call-overload]
        return struct.pack("<HH", number >> 16, number & 0xFFFF)
    fmt = _NUMBER_FORMATS.get(vr)
    if fmt is None:
        raise Unsupported("VR without a binary encoding")
    return struct.pack("<" + fmt, value)


def encode_sequence(tag: int, items: list[bytes], implicit: bool = False) -> bytes:
    """A sequence of already encoded items' contents (undefined lengths, delimited)."""
    parts = [_header(tag, "SQ", _UNDEFINED, implicit)]
    for item in items:
        parts.append(struct.pack("<HHI", 0xFFFE, 0xE000, _UNDEFINED))
        parts.append(item)
        parts.append(struct.pack("<HHI", 0xFFFE, 0xE00D, 0))
    parts.append(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    return b"".join(parts)
