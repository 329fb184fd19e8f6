"""Tag selectors used by profile rules.

Forms (all strings, so a profile stays one line per rule):

* ``PatientName`` - a keyword of the DICOM data dictionary;
* ``(0010,0010)`` - one tag;
* ``(0010,xxxx)``, ``(50xx,xxxx)`` - a group/element mask, ``x`` matches any hex digit;
* ``VR:PN`` - every public element of that Value Representation (private elements are
  selected by the private forms only, so a VR rule never revives a private attribute);
* ``(0029,xx10)@SIEMENS CSA HEADER`` - one element of a private block, by creator;
* ``private`` - every private element.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.datadict import tag_for_keyword
from pydicom.valuerep import VR

VALID_VRS = frozenset(vr.value for vr in VR if len(vr.value) == 2)
_TAG = re.compile(r"^\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)$")
_MASK = re.compile(r"^\(([0-9A-Fa-fxX]{4}),([0-9A-Fa-fxX]{4})\)$")
_PRIVATE = re.compile(r"^\(([0-9A-Fa-f]{4}),[xX]{2}([0-9A-Fa-f]{2})\)@(.+)$")

# Specificity: the most specific matching rule wins; ties go to the rule defined last.
SPECIFICITY = {"tag": 40, "private-element": 40, "mask": 20, "vr": 10, "private": 5}


@dataclass(frozen=True)
class Selector:
    """A parsed selector.

    ``kind`` is one of ``tag``, ``mask``, ``vr``, ``private-element``, ``private``.
    """

    text: str
    kind: str
    tag: int = 0
    mask: int = 0
    value: int = 0
    vr: str = ""
    creator: str = ""
    specificity: int = 0

    def matches(self, tag: int, vr: str, creator: str | None) -> bool:
        """Return whether the element (tag, VR, private creator) is selected."""
        if self.kind == "tag":
            return tag == self.tag
        if self.kind == "mask":
            return tag & self.mask == self.value
        if self.kind == "vr":
            return vr == self.vr and not is_private(tag)
        if self.kind == "private":
            return is_private(tag)
        return (
            creator is not None
            and tag >> 16 == self.tag >> 16
            and tag & 0xFF == self.tag & 0xFF
            and (tag & 0xFFFF) >= 0x1000
            and creator.strip() == self.creator
        )


def is_private(tag: int) -> bool:
    """Return whether ``tag`` is in an odd (private) group."""
    return bool((tag >> 16) & 1)


def parse_selector(text: str) -> Selector:
    """Parse a selector string; raise ValueError with a readable message."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty selector")
    if raw == "private":
        return Selector(raw, "private", specificity=SPECIFICITY["private"])
    if raw.startswith("VR:"):
        vr = raw[3:].strip()
        if vr not in VALID_VRS:
            raise ValueError(f"unknown VR {vr!r} in selector {raw!r}")
        return Selector(raw, "vr", vr=vr, specificity=SPECIFICITY["vr"])
    match = _PRIVATE.match(raw)
    if match:
        group = int(match.group(1), 16)
        if not group & 1:
            raise ValueError(f"private selector {raw!r} names an even (public) group")
        creator = match.group(3).strip()
        tag = (group << 16) | int(match.group(2), 16)
        return Selector(
            raw, "private-element", tag=tag, creator=creator,
            specificity=SPECIFICITY["private-element"],
        )
    match = _TAG.match(raw)
    if match:
        tag = int(match.group(1) + match.group(2), 16)
        return Selector(raw, "tag", tag=tag, specificity=SPECIFICITY["tag"])
    match = _MASK.match(raw)
    if match:
        return mask_selector(raw, match.group(1) + match.group(2))
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", raw):
        tag_value = tag_for_keyword(raw)
        if tag_value is None:
            raise ValueError(f"unknown DICOM keyword {raw!r}")
        return Selector(raw, "tag", tag=int(tag_value), specificity=SPECIFICITY["tag"])
    raise ValueError(
        f"cannot read selector {raw!r}: expected a keyword, (gggg,eeee), a mask like "
        "(0010,xxxx), VR:XX, (gggg,xxee)@CREATOR or 'private'"
    )


def mask_selector(text: str, pattern: str) -> Selector:
    """Build a mask selector from 8 characters of hex digits and ``x``."""
    mask = value = 0
    for char in pattern:
        mask <<= 4
        value <<= 4
        if char not in "xX":
            mask |= 0xF
            value |= int(char, 16)
    return Selector(text, "mask", mask=mask, value=value, specificity=SPECIFICITY["mask"])


def format_tag(tag: int) -> str:
    """Format a tag as ``(gggg,eeee)``."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
