"""Facts about DICOM Value Representations that the actions need (PS3.5 6.2)."""

from __future__ import annotations

# Maximum characters of one value, for the string VRs that have one.
MAX_LENGTH: dict[str, int] = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64,
    "LT": 10240, "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UI": 64,
}

#: VRs whose value is free text a person typed (PHI may hide inside).
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN"})
#: Every VR whose value pydicom returns as ``str`` (or a list of them).
STRING_VRS = TEXT_VRS | frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
DATE_VRS = frozenset({"DA", "DT"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"})
BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})

#: Dummy values (action ``dummy``, code D): non-empty, valid for the VR, identifying nothing.
DUMMY: dict[str, object] = {
    "AE": "ANONYMOUS", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101",
    "DS": "0", "DT": "19000101000000", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED",
    "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED", "TM": "000000",
    "UC": "ANONYMIZED", "UR": "urn:x-veil:anonymized", "UT": "ANONYMIZED",
    "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0,
    "AT": 0, "OB": b"\x00\x00", "OW": b"\x00\x00", "OD": b"\x00" * 8, "OF": b"\x00" * 4,
    "OL": b"\x00" * 4, "OV": b"\x00" * 8, "UN": b"\x00\x00",
}


def max_length(vr: str) -> int | None:
    """Return the maximum length of one value of ``vr``, or None if unbounded."""
    return MAX_LENGTH.get(vr)
