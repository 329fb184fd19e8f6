"""De-identify a Part 10 file at the byte level: the fast path of metadata-only jobs.

:func:`deidentify_bytes` reads the file's elements straight from its bytes
(:mod:`pipeline.rawfile`), applies the compiled profile with the same decisions and the
same action transforms as :func:`pipeline.engine.deidentify`, copies every element it
keeps as the bytes it was (Pixel Data included) and encodes only what changes.

It covers the common case: Explicit VR Little Endian (native or encapsulated pixel
data), ASCII text,
no trial mapping and no pixel cleaning. Anything else raises
:class:`pipeline.rawfile.Unsupported` before a byte is written, and the caller uses the
general path; ``tests/test_fastpath.py`` proves both paths give the same dataset,
actions, pseudonyms and warnings.
"""

from __future__ import annotations

import struct
from typing import TypeAlias

from pydicom.datadict import keyword_for_tag

from pipeline.actions import (
    DROP,
    TRANSFORMS,
    UNCHANGED,
    DeidContext,
    Items,
    clean_values,
)
from pipeline.engine import (
    _FILE_META_DROP,
    IMPLEMENTATION_UID,
    IMPLEMENTATION_VERSION,
    DeidResult,
    context_for,
    method_values,
    warnings_for,
)
from pipeline.errors import DeidError
from pipeline.keys import Keyring
from pipeline.profile.compiler import CompiledProfile, Decision
from pipeline.rawcheck import REQUIRED_UIDS, check_instance, top_text
from pipeline.rawfile import (
    Element,
    RawFile,
    Unsupported,
    encode_element,
    encode_numbers,
    encode_sequence,
    encode_strings,
    parse_file,
    strings,
)
from pipeline.text import HeaderCollector, relevant
from pipeline.text.context import _MAX_DEPTH, COLLECTED_VRS
from pipeline.vr import STRING_VRS, TEXT_VRS
from pipeline.walker import CLEAN_NOW_VRS, SWEEP_VRS, _keyword, _tag_text, swept

__all__ = ["Unsupported", "applies", "deidentify_bytes"]

class Slot:
    """An output element whose value may still change (deferred cleaning, the sweep)."""

    __slots__ = ("implicit", "raw", "tag", "value", "values", "vr")

    def __init__(self, tag: int, vr: str, raw: memoryview, value: bytes, implicit: bool
                 ) -> None:
        self.tag, self.vr, self.raw, self.value = tag, vr, raw, value
        self.implicit = implicit
        self.values: list[str] | None = None  # None: unchanged

    def read(self) -> list[str]:
        """The current string values."""
        return strings(self.value, self.vr) if self.values is None else list(self.values)

    def encode(self) -> bytes | memoryview:
        """The element's bytes: as read when unchanged."""
        if self.values is None:
            return self.raw
        return encode_element(self.tag, self.vr, encode_strings(self.values, self.vr),
                              self.implicit)


#: An output element: final bytes, a :class:`Slot`, or a walked sequence's items.
Out: TypeAlias = bytes | memoryview | Slot | list[list[tuple[int, "Out"]]]


def _set(slot: Slot, change: object) -> None:
    """Give a slot the value a transform returned (strings only reach slots)."""
    if change is UNCHANGED:
        return
    if isinstance(change, str):
        slot.values = [change]
    elif isinstance(change, list):
        slot.values = change
    else:
        raise Unsupported("deferred change is not text")


def _encode_change(tag: int, vr: str, change: object, implicit: bool) -> bytes | None:
    """The bytes of an element after its transform (None: dropped)."""
    if change is DROP:
        return None
    if isinstance(change, Items):
        if not change.count:
            return encode_element(tag, vr, b"", implicit)
        return encode_sequence(tag, [b""] * change.count, implicit)
    if change is None or vr in STRING_VRS:
        value = encode_strings(change, vr)  # type: ignore[arg-type]
    else:
        value = encode_numbers(change, vr)
    return encode_element(tag, vr, value, implicit)


class ByteWalker:
    """:class:`pipeline.walker.Walker` on parsed bytes: the same decisions in the same order."""

    def __init__(self, raw: RawFile, ctx: DeidContext, sweep: bool, include_institution: bool
                 ) -> None:
        self.file = raw
        self.view = memoryview(raw.data)
        self.ctx = ctx
        self.decide = ctx.compiled.decide
        self.sweep = sweep
        self.collector = HeaderCollector(include_institution)
        self.deferred: list[tuple[Slot, str, Decision, bool]] = []
        self.candidates: list[tuple[Slot, str, str]] = []

    def _value(self, element: Element) -> bytes:
        return self.file.data[element.value_start:element.end]

    def _raw(self, element: Element) -> memoryview:
        return self.view[element.start:element.end]

    def _slot(self, element: Element) -> Slot:
        return Slot(element.tag, element.vr, self._raw(element), self._value(element),
                    self.file.implicit)

    def _creator(self, creators: dict[int, Element], number: int) -> str | None:
        """:func:`pipeline.values.private_creator` on bytes."""
        found = creators.get((number & 0xFFFF0000) | ((number >> 8) & 0xFF))
        if found is None:
            return None
        value = self._value(found)
        if found.vr == "UN":
            return value.decode("latin-1")
        if found.vr not in STRING_VRS or b"\\" in value or not value.isascii():
            raise Unsupported("private creator value")
        return value.decode("ascii").rstrip("\x00 ")

    def walk(self, elements: list[Element], prefix: str, deep: bool, parent: str = ""
             ) -> list[tuple[int, Out]]:
        """Apply decisions to every element of one dataset level; return what stays."""
        out: list[tuple[int, Out]] = []
        creators: dict[int, Element] = {}
        names: dict[int, str | None] = {}
        record = self.ctx.record
        for element in elements:
            number = element.tag
            if not number & 0xFFFF or not number >> 16:
                continue  # group lengths and command elements go, as in the Walker
            private = (number >> 16) & 1
            if private and (number & 0xFFFF) < 0x100:
                creators[number] = element
                out.append((number, self._raw(element)))
                continue
            vr = element.vr
            if vr == "UN" and not private:
                raise Unsupported("public element sent as UN")
            creator = None
            if private:
                slot = (number & 0xFFFF0000) | ((number & 0xFFFF) >> 8)
                if slot not in names:
                    names[slot] = self._creator(creators, number)
                creator = names[slot]
            keyword = "" if private else _keyword(number)
            if vr != "SQ" and relevant(keyword, vr, parent):
                self.collector.add(keyword, parent, vr, strings(self._value(element), vr))
            if private and creator is None:
                record(prefix + _tag_text(number), number, vr, "drop", "private",
                       "private element without creator")
                continue
            decision = self.decide(number, vr, creator)
            if vr != "SQ":
                if decision.action == "drop":
                    record(prefix + _tag_text(number), number, vr, "drop", decision.source)
                    continue
                if decision.action == "keep" and decision.source.startswith("rule:"):
                    out.append((number, self._raw(element)))
                    continue
            path = prefix + _tag_text(number)
            kept = self.apply(element, vr, decision, path, deep, keyword or parent)
            if kept is not None:
                out.append((number, kept))
        if creators:
            blocks = {tag & 0xFFFFFF00 for tag, _ in out}
            out = [(tag, o) for tag, o in out if tag not in creators
                   or (tag & 0xFFFF0000) | ((tag & 0xFF) << 8) in blocks]
        return out

    def apply(self, element: Element, vr: str, decision: Decision, path: str, deep: bool,
              parent: str) -> Out | None:
        """One decision on one element; return its output (None when it goes)."""
        action, number = decision.action, element.tag
        if vr == "SQ":
            items = element.items or []
            if action in ("keep", "clean", "uid-remap"):
                inner = deep or action == "clean"
                if action == "clean":
                    self.ctx.record(path, number, vr, "clean", decision.source, "items cleaned")
                return [self.walk(item, f"{path}[{index}].", inner, parent)
                        for index, item in enumerate(items)]
            for item in items:
                self.collect(item, parent, 1)
        elif action == "keep" or (action == "clean" and vr not in CLEAN_NOW_VRS):
            if action == "keep" and decision.source.startswith("rule:"):
                return self._raw(element)
            if action == "clean" or (deep and vr in TEXT_VRS):
                slot = self._slot(element)
                self.deferred.append((slot, path, decision, action == "keep"))
                return slot
            if self.sweep and vr in SWEEP_VRS:
                slot = self._slot(element)
                text = "\\".join(slot.read())
                if text:
                    self.candidates.append((slot, path, text))
                return slot
            return self._raw(element)
        transform = TRANSFORMS.get(action)
        if transform is None:
            raise DeidError(f"no handler for action {action!r} at {_tag_text(number)}")
        value = self._value(element)
        change = transform(lambda: strings(value, vr), number, vr, decision, self.ctx, path)
        if change is UNCHANGED:
            return self._raw(element)
        return _encode_change(number, vr, change, self.file.implicit)

    def collect(self, elements: list[Element], parent: str, depth: int) -> None:
        """:meth:`pipeline.text.HeaderCollector.walk` on bytes (a removed sequence's items)."""
        if depth > _MAX_DEPTH:
            return
        for element in elements:
            keyword = keyword_for_tag(element.tag) or ""
            vr = element.vr
            if not relevant(keyword, vr, parent):
                continue
            if vr in COLLECTED_VRS:
                self.collector.add(keyword, parent, vr, strings(self._value(element), vr))
            elif vr == "SQ":
                for item in element.items or []:
                    self.collect(item, keyword or parent, depth + 1)

    def finish(self) -> None:
        """Deferred cleaning with the collected header values, then the residual sweep."""
        ctx = self.ctx
        ctx.header = self.collector.context()
        for slot, path, decision, deep in self.deferred:
            if deep:
                found, new = clean_values(slot.read(), slot.vr, ctx, ctx.tagger)
                if new is not None:
                    slot.values = new
                if found:
                    ctx.record(path, slot.tag, slot.vr, "clean", "structured-content",
                               f"{found} span(s)")
            else:
                _set(slot, TRANSFORMS["clean"](slot.read, slot.tag, slot.vr, decision, ctx,
                                               path))
        if self.sweep and not ctx.header.empty:
            for index in swept([text for *_, text in self.candidates], ctx):
                slot, path, _ = self.candidates[index]
                found, new = clean_values(slot.read(), slot.vr, ctx, ctx.header_tagger)
                if new is not None:
                    slot.values = new
                if found:
                    ctx.record(path, slot.tag, slot.vr, "clean", "sweep",
                               "header value copied here")


def _serialise(level: list[tuple[int, Out]], implicit: bool) -> list[bytes | memoryview]:
    """The bytes of one dataset level, in tag order."""
    parts: list[bytes | memoryview] = []
    for tag, out in sorted(level, key=lambda pair: pair[0]):
        if isinstance(out, Slot):
            parts.append(out.encode())
        elif isinstance(out, list):
            items = [b"".join(_serialise(item, implicit)) for item in out]
            parts.append(encode_sequence(tag, items, implicit))
        else:
            parts.append(out)
    return parts


#: (id(compiled), implicit) -> (compiled, its finishing elements), as the engine caches.
_FINISHING: dict[tuple[int, bool], tuple[CompiledProfile, tuple[tuple[int, bytes], ...]]] = {}


def _finishing(compiled: CompiledProfile, implicit: bool) -> tuple[tuple[int, bytes], ...]:
    """The elements every output of ``compiled`` gets (cached per compiled profile)."""
    key = (id(compiled), implicit)
    cached = _FINISHING.get(key)
    if cached is None or cached[0] is not compiled:
        if len(_FINISHING) > 64:
            _FINISHING.clear()
        cached = _FINISHING[key] = (compiled, _finishing_elements(compiled, implicit))
    return cached[1]


def _finishing_elements(compiled: CompiledProfile, implicit: bool
                        ) -> tuple[tuple[int, bytes], ...]:
    """Patient Identity Removed, De-identification Method and its codes, Longitudinal..."""
    def element(tag: int, vr: str, value: str | list[str]) -> bytes:
        return encode_element(tag, vr, encode_strings(value, vr), implicit)

    items = [b"".join([element(0x00080100, "SH", code), element(0x00080102, "SH", "DCM"),
                       element(0x00080104, "LO", meaning)])
             for code, meaning in compiled.codes]
    return (
        (0x00120062, element(0x00120062, "CS", "YES")),
        (0x00120063, element(0x00120063, "LO", method_values(compiled))),
        (0x00120064, encode_sequence(0x00120064, items, implicit)),
        (0x00280303, element(0x00280303, "CS", compiled.temporal)),
    )


def _meta(raw: RawFile, sop_class: str | None, sop_uid: str) -> bytes:
    """The file meta group of the output, as pydicom's conformant writer lays it out."""
    elements: dict[int, bytes | memoryview] = {}
    view = memoryview(raw.data)
    for element in raw.meta:
        if element.tag != 0x00020000 and element.tag not in _FILE_META_DROP:
            elements[element.tag] = view[element.start:element.end]
    elements.setdefault(0x00020001, encode_element(0x00020001, "OB", b"\x00\x01"))
    if sop_class is not None:
        elements[0x00020002] = encode_element(0x00020002, "UI", encode_strings(sop_class, "UI"))
    if 0x00020002 not in elements:
        raise Unsupported("no SOP class")
    elements[0x00020003] = encode_element(0x00020003, "UI", encode_strings(sop_uid, "UI"))
    elements[0x00020012] = encode_element(0x00020012, "UI",
                                          encode_strings(IMPLEMENTATION_UID, "UI"))
    elements[0x00020013] = encode_element(0x00020013, "SH",
                                          encode_strings(IMPLEMENTATION_VERSION, "SH"))
    body = b"".join(elements[tag] for tag in sorted(elements))
    return encode_element(0x00020000, "UL", struct.pack("<I", len(body))) + body


def _uid_of(level: list[tuple[int, Out]], tag: int) -> str:
    """A UID of the output's top level."""
    for number, out in level:
        if number == tag:
            if isinstance(out, Slot):
                values = out.read()
            elif isinstance(out, (bytes, memoryview)):
                header = 8  # UI has a short explicit header
                values = strings(bytes(out[header:]), "UI")
            else:
                break
            if len(values) == 1:
                return values[0]
            break
    raise Unsupported("output UID")


def applies(compiled: CompiledProfile) -> bool:
    """Whether files of ``compiled`` can take the fast path (no trial mapping, no pixels)."""
    return compiled.trial is None and "clean-pixel-data" not in compiled.options


def deidentify_bytes(data: bytes, compiled: CompiledProfile, keyring: Keyring) -> DeidResult:
    """De-identify the Part 10 file ``data``; the result carries the output bytes.

    Raises
    ------
    Unsupported
        When the file or the profile needs the general path
        (:func:`pipeline.engine.deidentify`), which then gives the canonical result or
        error; nothing has been written.
    DeidError
        Never on its own: a transform's refusal is turned into :class:`Unsupported` so
        that the general path reports it in its own words.
    """
    if not applies(compiled):
        raise Unsupported("profile needs the general path")
    raw = parse_file(data)
    top = {element.tag: element for element in raw.elements}

    def get(keyword: str) -> str:
        return top_text(raw, keyword, top)

    has_pixels = check_instance(raw, top, get)
    ctx, note = context_for(get, compiled, keyring)
    warnings = warnings_for(get, has_pixels, False)
    if note:
        warnings.append(note)
    include_institution = "retain-institution-identity" not in compiled.options
    walker = ByteWalker(raw, ctx, compiled.profile.residual_sweep, include_institution)
    try:
        level = walker.walk(raw.elements, "", deep=False)
        walker.finish()
    except (DeidError, ValueError, TypeError, KeyError, AttributeError, OverflowError,
            struct.error) as exc:
        raise Unsupported("the general path reports this file") from exc
    finishing = _finishing(compiled, raw.implicit)
    done = {tag for tag, _ in finishing}
    level = [(tag, out) for tag, out in level if tag not in done] + list(finishing)
    study = _uid_of(level, REQUIRED_UIDS["StudyInstanceUID"])
    series = _uid_of(level, REQUIRED_UIDS["SeriesInstanceUID"])
    sop = _uid_of(level, REQUIRED_UIDS["SOPInstanceUID"])
    sop_class = _uid_of(level, 0x00080016) if any(t == 0x00080016 for t, _ in level) else None
    encoded = b"".join([
        bytes(128), b"DICM",
        _meta(raw, sop_class, sop),
        *_serialise(level, raw.implicit),
    ])
    return DeidResult(
        parsed=None,
        actions=tuple(ctx.actions),
        warnings=tuple(warnings),
        pseudonyms=tuple(ctx.all_pseudonyms()),
        study_uid=study,
        series_uid=series,
        sop_uid=sop,
        encoded=encoded,
    )
