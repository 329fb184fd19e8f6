"""The element walker of :func:`pipeline.engine.deidentify` (the hot loop of a file).

The walker applies the compiled profile's decision to every element, recursing into
sequences, and collects the file's certain-PHI values as it goes. It reads elements
straight from the dataset's element dictionary and converts exactly the elements the
reference walker (:mod:`pipeline.engine_reference`) converts, in the same order, so
the written bytes are the same; ``tests/test_engine_fastpath.py`` checks that.
"""

from __future__ import annotations

import functools

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from pipeline.actions import HANDLERS, DeidContext, clean_string
from pipeline.errors import DeidError
from pipeline.profile.compiler import Decision
from pipeline.selectors import format_tag
from pipeline.text import HeaderCollector, relevant
from pipeline.values import element_strings, private_creator
from pipeline.vr import BYTES_VRS, DATE_VRS, NUMBER_VRS, STRING_VRS, TEXT_VRS

__all__ = ["CLEAN_NOW_VRS", "SWEEP_VRS", "Walker", "swept"]

#: VRs the residual sweep looks into (values that can carry copied identifiers).
SWEEP_VRS = STRING_VRS - {"UI", "DA", "DT", "TM", "DS", "IS", "AS"}


def _element_vr(ds: Dataset, tag: int) -> str:
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if not vr or vr in _AMBIGUOUS_VRS or (vr == "UN" and not (tag >> 16) & 1):
        vr = ds[tag].VR  # implicit VR, ambiguous, or a public tag sent as UN: pydicom resolves
    return str(vr)


#: VRs whose "clean" needs no header values (dates shift, UIDs remap...): done at once.
CLEAN_NOW_VRS = DATE_VRS | NUMBER_VRS | BYTES_VRS | {"UI", "SQ", "TM", "AT", "DS", "IS"}
_AMBIGUOUS_VRS = frozenset({"US or SS", "US or OW", "OB or OW", "US or SS or OW"})
#: Separator between values in the batched sweep: no header pattern can match across it.
_SWEEP_JOIN = "\x00|\x00"


_tag_text = functools.lru_cache(maxsize=65536)(format_tag)
#: :func:`pipeline.text.relevant` depends on its arguments only.
_relevant = functools.lru_cache(maxsize=65536)(relevant)


@functools.lru_cache(maxsize=65536)
def _keyword(tag: int) -> str:
    return keyword_for_tag(tag) or ""


def _current(ds: Dataset, tag: BaseTag) -> DataElement | RawDataElement:
    """``ds.get_item(tag)`` for a tag known to be present, without building a Tag."""
    elem = ds._dict[tag]
    if isinstance(elem, RawDataElement) and elem.value is None:
        return ds[tag]  # a deferred read: get_item converts it too
    return elem


#: Pixel data tags: deleting one by an ``int`` key also drops pydicom's pixel cache ids.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})


def _delete(ds: Dataset, tag: BaseTag) -> None:
    """``del ds[int(tag)]`` without building a Tag (what the int key does, exactly)."""
    del ds[tag]
    if int(tag) in _PIXEL_TAGS:
        ds._pixel_id = {}


def _vr_of(ds: Dataset, tag: BaseTag) -> tuple[str, DataElement | RawDataElement]:
    """:func:`_element_vr` and the element as it is afterwards (same conversions)."""
    elem = _current(ds, tag)
    vr = elem.VR
    if not vr or vr in _AMBIGUOUS_VRS or (vr == "UN" and not (tag >> 16) & 1):
        elem = ds[tag]
        vr = elem.VR
    return str(vr), elem


class Walker:
    """Applies decisions to every element, recursing into sequences.

    The walk also collects the file's certain-PHI values (names, IDs, dates...) as it
    goes; free-text cleaning needs all of them, so it runs after the walk
    (:meth:`finish`), followed by the residual sweep of kept attributes.

    It reads elements straight from the dataset's element dictionary (the keys are the
    dataset's own tags, so no ``Tag`` is built) and converts exactly the elements that
    :class:`pipeline.engine_reference.ReferenceWalker` converts, in the same order, so
    the written bytes are the same; ``tests/test_engine_fastpath.py`` checks that.
    """

    def __init__(self, ctx: DeidContext, sweep: bool, include_institution: bool) -> None:
        self.ctx = ctx
        self.compiled = ctx.compiled
        self.sweep = sweep
        self.collector = HeaderCollector(include_institution)
        self.deferred: list[tuple[Dataset, int, str, str, Decision, bool]] = []
        self.candidates: list[tuple[Dataset, int, str, str, str]] = []

    def walk(self, ds: Dataset, prefix: str, deep: bool, parent: str = "") -> None:
        """Apply decisions to every element of ``ds``, recursing into sequences."""
        creators: dict[int, str | None] = {}  # creator tag -> its value, once read
        decide = self.compiled.decide
        record = self.ctx.record
        for tag in list(ds._dict):
            number = int(tag)  # plain ints hash and compare in C; BaseTag compares in Python
            element = number & 0xFFFF
            group = number >> 16
            if element == 0 or group == 0:
                # group lengths are retired; command elements never belong in a stored file
                _delete(ds, tag)
                continue
            private = group & 1
            if private and element < 0x100:
                creators.setdefault(number, None)
                continue
            vr, elem = _vr_of(ds, tag)
            creator = None
            if private:
                slot = (number & 0xFFFF0000) | (element >> 8)
                creator = creators.get(slot)
                if creator is None:
                    creator = private_creator(ds, number)
                    if creator is not None:
                        creators[slot] = creator
            keyword = "" if private else _keyword(number)
            if vr != "SQ" and _relevant(keyword, vr, parent):
                self.collector.add(keyword, parent, vr, element_strings(ds, tag, vr, elem))
            if private and creator is None:
                _delete(ds, tag)
                path = prefix + _tag_text(number)
                record(path, number, vr, "drop", "private", "private element without creator")
                continue
            decision = decide(number, vr, creator)
            action = decision.action
            if vr != "SQ":
                if action == "drop":
                    _delete(ds, tag)
                    record(prefix + _tag_text(number), number, vr, "drop", decision.source)
                    continue
                if action == "keep" and decision.source.startswith("rule:"):
                    continue
            path = prefix + _tag_text(number)
            self.apply(ds, tag, vr, decision, path, deep, keyword or parent)
        if creators:
            blocks = {int(t) & 0xFFFFFF00 for t in ds._dict}
            for number in creators:
                if (number & 0xFFFF0000) | ((number & 0xFF) << 8) not in blocks:
                    del ds[number]

    def apply(
        self, ds: Dataset, tag: BaseTag, vr: str, decision: Decision, path: str, deep: bool,
        parent: str,
    ) -> None:
        """Apply one decision to one element (``tag``: the dataset's own key)."""
        action = decision.action
        number = int(tag)
        if vr == "SQ":
            items = ds[tag].value or []
            if action in ("keep", "clean", "uid-remap"):
                # U on a sequence (X/Z/U*): keep it; the UIDs of its items are remapped by theirs
                inner = deep or action == "clean"
                if action == "clean":
                    self.ctx.record(path, number, vr, "clean", decision.source, "items cleaned")
                for index, item in enumerate(items):
                    self.walk(item, f"{path}[{index}].", inner, parent)
                return
            for item in items:  # removed, but what it held is PHI that may be copied elsewhere
                self.collector.walk(item, parent, 1)
        elif action == "keep":
            if not decision.source.startswith("rule:"):
                if deep and vr in TEXT_VRS:
                    self.deferred.append((ds, number, vr, path, decision, True))
                elif self.sweep and vr in SWEEP_VRS:
                    text = "\\".join(element_strings(ds, tag, vr, _current(ds, tag)))
                    if text:
                        self.candidates.append((ds, number, vr, path, text))
            return
        elif action == "clean" and vr not in CLEAN_NOW_VRS:
            self.deferred.append((ds, number, vr, path, decision, False))
            return
        handler = HANDLERS.get(action)
        if handler is None:
            raise DeidError(f"no handler for action {action!r} at {format_tag(number)}")
        handler(ds, number, vr, decision, self.ctx, path)

    def finish(self) -> None:
        """Clean free text with the collected header values, then sweep kept text."""
        self.ctx.header = self.collector.context()
        for ds, tag, vr, path, decision, deep in self.deferred:
            if deep:
                found = clean_string(ds, tag, vr, self.ctx, self.ctx.tagger)
                if found:
                    note = f"{found} span(s)"
                    self.ctx.record(path, tag, vr, "clean", "structured-content", note)
            else:
                HANDLERS["clean"](ds, tag, vr, decision, self.ctx, path)
        if self.sweep and not self.ctx.header.empty:
            self.sweep_candidates()

    def sweep_candidates(self) -> None:
        """Residual sweep: header values copied into kept attributes, in one pass."""
        texts = [text for *_, text in self.candidates]
        for index in swept(texts, self.ctx):
            ds, tag, vr, path, _ = self.candidates[index]
            if clean_string(ds, tag, vr, self.ctx, self.ctx.header_tagger):
                self.ctx.record(path, tag, vr, "clean", "sweep", "header value copied here")


def swept(texts: list[str], ctx: DeidContext) -> list[int]:
    """Indices of the kept ``texts`` that hold a header value (one tagger call for all)."""
    if not texts:
        return []
    joined = _SWEEP_JOIN.join(texts)
    spans = ctx.header_tagger.tag(joined, ctx.header)
    if not spans:
        return []
    starts, position = [], 0
    for text in texts:
        starts.append(position)
        position += len(text) + len(_SWEEP_JOIN)
    hit = set()
    for span in spans:
        for index, start in enumerate(starts):
            if span.start < start + len(texts[index]) and span.end > start:
                hit.add(index)
    return sorted(hit)
