"""The element walker as it was before the fast path: the reference for differential tests.

:func:`deidentify_reference` runs :func:`pipeline.engine.deidentify` with this frozen
walker instead of the fast one; everything else (context, handlers, finishing) is shared,
so a difference between the two outputs can only come from the walk. Not for production
use: it is slower and exists so that ``tests/test_engine_fastpath.py`` can prove the fast
walker changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from pipeline import engine, walker
from pipeline.actions import HANDLERS, DeidContext, clean_string
from pipeline.errors import DeidError
from pipeline.keys import Keyring
from pipeline.profile.compiler import CompiledProfile, Decision
from pipeline.selectors import format_tag
from pipeline.text import HeaderCollector, relevant
from pipeline.values import split_values
from pipeline.vr import TEXT_VRS

if TYPE_CHECKING:
    from pipeline.pixel.stage import PixelEngines

__all__ = ["ReferenceWalker", "deidentify_reference"]

_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})


def _string_values(ds: Dataset, tag: int, vr: str) -> list[str]:
    raw = ds.get_item(tag)
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and raw.value.isascii():
        text = raw.value.decode("ascii")
        text = text.rstrip(" \x00") if vr in _SINGLE_VALUED else text.strip(" \x00")
        if not text:
            return []
        if vr in _SINGLE_VALUED:
            return [text]
        return [part.strip(" ") for part in text.split("\\")]
    if raw is not None and not isinstance(raw, RawDataElement) and raw.value is None:
        return []
    return split_values(ds[tag].value)


def _private_creator(ds: Dataset, tag: int) -> str | None:
    slot = (tag & 0xFFFF0000) | ((tag >> 8) & 0xFF)
    if slot not in ds:
        return None
    value = ds[slot].value
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


class ReferenceWalker:
    """The walker of ``pipeline.engine`` before the fast path, unchanged."""

    def __init__(self, ctx: DeidContext, sweep: bool, include_institution: bool) -> None:
        self.ctx = ctx
        self.compiled = ctx.compiled
        self.sweep = sweep
        self.collector = HeaderCollector(include_institution)
        self.deferred: list[tuple[Dataset, int, str, str, Decision, bool]] = []
        self.candidates: list[tuple[Dataset, int, str, str, str]] = []

    def walk(self, ds: Dataset, prefix: str, deep: bool, parent: str = "") -> None:
        """Apply decisions to every element of ``ds``, recursing into sequences."""
        creators: list[int] = []
        for base_tag in list(ds.keys()):
            tag = int(base_tag)
            element = tag & 0xFFFF
            if element == 0 or tag >> 16 == 0:
                del ds[tag]
                continue
            private = bool((tag >> 16) & 1)
            if private and element < 0x100:
                creators.append(tag)
                continue
            vr = walker._element_vr(ds, tag)
            path = prefix + walker._tag_text(tag)
            creator = _private_creator(ds, tag) if private else None
            keyword = "" if private else walker._keyword(tag)
            if vr != "SQ" and relevant(keyword, vr, parent):
                self.collector.add(keyword, parent, vr, _string_values(ds, tag, vr))
            if private and creator is None:
                del ds[tag]
                self.ctx.record(path, tag, vr, "drop", "private", "private element without creator")
                continue
            decision = self.compiled.decide(tag, vr, creator)
            self.apply(ds, tag, vr, decision, path, deep, keyword or parent)
        for tag in creators:
            block = (tag & 0xFF) << 8
            group = tag & 0xFFFF0000
            if not any(group | block <= int(t) <= group | block | 0xFF for t in ds.keys()):  # noqa: SIM118
                del ds[tag]

    def apply(
        self, ds: Dataset, tag: int, vr: str, decision: Decision, path: str, deep: bool,
        parent: str,
    ) -> None:
        """Apply one decision to one element."""
        action = decision.action
        if vr == "SQ":
            items = ds[tag].value or []
            if action in ("keep", "clean", "uid-remap"):
                inner = deep or action == "clean"
                if action == "clean":
                    self.ctx.record(path, tag, vr, "clean", decision.source, "items cleaned")
                for index, item in enumerate(items):
                    self.walk(item, f"{path}[{index}].", inner, parent)
                return
            for item in items:
                self.collector.walk(item, parent, 1)
        elif action == "keep":
            if not decision.source.startswith("rule:"):
                if deep and vr in TEXT_VRS:
                    self.deferred.append((ds, tag, vr, path, decision, True))
                elif self.sweep and vr in walker.SWEEP_VRS:
                    text = "\\".join(_string_values(ds, tag, vr))
                    if text:
                        self.candidates.append((ds, tag, vr, path, text))
            return
        elif action == "clean" and vr not in walker.CLEAN_NOW_VRS:
            self.deferred.append((ds, tag, vr, path, decision, False))
            return
        handler = HANDLERS.get(action)
        if handler is None:
            raise DeidError(f"no handler for action {action!r} at {format_tag(tag)}")
        handler(ds, tag, vr, decision, self.ctx, path)

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
        if not self.candidates:
            return
        texts = [text for *_, text in self.candidates]
        joined = walker._SWEEP_JOIN.join(texts)
        spans = self.ctx.header_tagger.tag(joined, self.ctx.header)
        if not spans:
            return
        starts, position = [], 0
        for text in texts:
            starts.append(position)
            position += len(text) + len(walker._SWEEP_JOIN)
        hit = set()
        for span in spans:
            for index, start in enumerate(starts):
                if span.start < start + len(texts[index]) and span.end > start:
                    hit.add(index)
        for index in sorted(hit):
            ds, tag, vr, path, _ = self.candidates[index]
            if clean_string(ds, tag, vr, self.ctx, self.ctx.header_tagger):
                self.ctx.record(path, tag, vr, "clean", "sweep", "header value copied here")


def deidentify_reference(
    ds: Dataset,
    compiled: CompiledProfile,
    keyring: Keyring,
    *,
    in_place: bool = False,
    pixel_engines: PixelEngines | None = None,
) -> engine.DeidResult:
    """:func:`pipeline.engine.deidentify` with the reference walker (same arguments)."""
    return engine._deidentify(ds, compiled, keyring, in_place, pixel_engines, ReferenceWalker)
