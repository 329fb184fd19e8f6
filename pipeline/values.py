"""Read string values of elements without pydicom's full conversion when it is safe.

pydicom converts a raw element (bytes) into Python values on first access, which is the
main cost of a de-identification pass. Pure-ASCII string values decode identically under
every DICOM character set, so they are decoded here directly; anything else goes through
pydicom's conversion (which honours Specific Character Set).
"""

from __future__ import annotations

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

#: VRs whose value may contain a backslash (single-valued by definition).
SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})


def split_values(value: object) -> list[str]:
    """Return a converted element value as a list of strings (empty when no value)."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(v) for v in value]
    return [str(value)]


def string_values(ds: Dataset, tag: int, vr: str) -> list[str]:
    """Return the string values of a string-VR element, converting only when needed."""
    return element_strings(ds, tag, vr, ds.get_item(tag))


def element_strings(
    ds: Dataset, tag: int, vr: str, raw: DataElement | RawDataElement | None
) -> list[str]:
    """:func:`string_values` when the caller already holds ``ds.get_item(tag)`` as ``raw``."""
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and raw.value.isascii():
        return ascii_strings(raw.value, vr)
    if raw is not None and not isinstance(raw, RawDataElement) and raw.value is None:
        return []
    values = split_values(ds[tag].value)
    if vr in SINGLE_VALUED:
        return values
    # as ascii_strings reads them: leading spaces of these VRs are padding (pydicom keeps
    # them once an element is converted, so the same bytes read two ways otherwise)
    values = [v.strip(" ") for v in values]
    return [] if values == [""] else values


def ascii_strings(value: bytes, vr: str) -> list[str]:
    """The string values of the pure-ASCII bytes ``value`` of a string-VR element.

    Padding is cut; multi-valued VRs split on backslashes (each value trimmed).
    """
    text = value.decode("ascii")
    text = text.rstrip(" \x00") if vr in SINGLE_VALUED else text.strip(" \x00")
    if not text:
        return []
    if vr in SINGLE_VALUED:
        return [text]
    return [part.strip(" ") for part in text.split("\\")]


def store(ds: Dataset, tag: int, vr: str, values: list[str] | str | None) -> None:
    """Replace an element's value without converting the old one."""
    if isinstance(values, list):
        values = values[0] if len(values) == 1 else (values or None)
    ds.add_new(tag, vr, values)


def private_creator(ds: Dataset, tag: int) -> str | None:
    """The private creator of private element ``tag`` of ``ds`` (None when missing)."""
    slot = (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)
    if slot not in ds:
        return None
    value = ds[slot].value
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)
