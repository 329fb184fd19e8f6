"""What :func:`pipeline.io.reader.read_instance` checks, done on a parsed file's bytes.

The fast path (:mod:`pipeline.fastpath`) must never accept a file the general path's
reader refuses: each check here raises :class:`pipeline.rawfile.Unsupported` where the
reader would fail or skip the file, so that the reader gives its own reason.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from pydicom.datadict import tag_for_keyword

from pipeline.io.reader import native_pixel_bytes
from pipeline.rawfile import NUMBER_SIZES, Element, RawFile, Unsupported

__all__ = ["REQUIRED_UIDS", "check_instance", "check_numbers", "top_text"]

_PIXEL_DATA = 0x7FE00010
_OTHER_PIXELS = (0x7FE00008, 0x7FE00009)
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_DIRECTORY_RECORDS = 0x00041220
#: The instance-identifying UIDs every file must have (keyword -> tag).
REQUIRED_UIDS = {"SOPInstanceUID": 0x00080018, "StudyInstanceUID": 0x0020000D,
                 "SeriesInstanceUID": 0x0020000E}


def top_text(raw: RawFile, keyword: str, elements: dict[int, Element]) -> str:
    """A top-level value as ``str(ds.get(keyword, "") or "")`` reads it (plain ASCII only)."""
    tag = tag_for_keyword(keyword)
    element = elements.get(tag) if tag is not None else None
    if element is None:
        return ""
    value = raw.value(element)
    if b"\\" in value or not value.isascii() or value[:1].isspace():
        raise Unsupported("value needs pydicom's conversion")
    return value.decode("ascii").rstrip("\x00 ")


def check_instance(raw: RawFile, top: dict[int, Element], get: Callable[[str], str]) -> bool:
    """What :func:`pipeline.io.reader.read_instance` checks; return whether it has pixels."""
    meta = {e.tag: e for e in raw.meta}
    sop_class = meta.get(0x00020002)
    if sop_class is not None and raw.value(sop_class).rstrip(b"\x00 ") == _DICOMDIR_CLASS.encode():
        raise Unsupported("DICOMDIR")
    if _DIRECTORY_RECORDS in top or any(tag in top for tag in _OTHER_PIXELS):
        raise Unsupported("directory records or float pixel data")
    for keyword in REQUIRED_UIDS:
        if not get(keyword).strip():
            raise Unsupported("missing instance UID")
    check_numbers(raw.elements)
    pixels = top.get(_PIXEL_DATA)
    if pixels is None:
        return False
    if pixels.vr not in ("OB", "OW"):
        raise Unsupported("pixel data VR")
    geometry = {"SamplesPerPixel": 1}
    for keyword in ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel"):
        element = top.get(tag_for_keyword(keyword) or 0)
        if element is None and keyword == "SamplesPerPixel":
            continue
        if element is None or element.vr != "US" or element.end - element.value_start != 2:
            raise Unsupported("pixel geometry")
        geometry[keyword] = struct.unpack("<H", raw.value(element))[0]
    if pixels.items is not None:
        return True  # encapsulated: its fragments parsed (rawfile checks them)
    try:
        frames = max(int(get("NumberOfFrames") or 1), 1)
    except ValueError:
        raise Unsupported("number of frames") from None
    expected = native_pixel_bytes(geometry["Rows"] * geometry["Columns"] * frames,
                                  geometry["SamplesPerPixel"] or 1, geometry["BitsAllocated"],
                                  get("PhotometricInterpretation"))
    if pixels.end - pixels.value_start < expected:
        raise Unsupported("short pixel data")
    return True


def check_numbers(elements: list[Element]) -> None:
    """Binary numbers of a length pydicom refuses to read send the file to the general path."""
    for element in elements:
        size = NUMBER_SIZES.get(element.vr)
        if size is not None and element.vr != "AT" and (element.end - element.value_start) % size:
            raise Unsupported("binary value of a wrong length")
        for item in element.items or ():
            check_numbers(item)
