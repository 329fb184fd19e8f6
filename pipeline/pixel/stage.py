"""The pixel stage of de-identification (option clean-pixel-data).

For every frame and view (by default one: the inverted full-range rendering, see
``DETECT_VIEWS``): detect text boxes, shrink each to the ink it holds
(:func:`~pipeline.pixel.frames.tighten`), read them, decide which hold PHI (the file's
own header values, patterns, dictionaries), add the fixed regions of known devices,
then fill every PHI box in the stored pixels. Findings record where and what kind,
never the text. A finding whose confidence is under the profile's review threshold is
still redacted (privacy first) and flags the instance for review, and so is a text
line that cannot be read (``UNREADABLE``); text judged not to be PHI is left in place
and reported as ``rejected``. A frame with faint ink on flat panels gets a second
detection pass on a stretched view of them (:mod:`pipeline.pixel.panels`, profile
``pixel.panel_pass``).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from pipeline.pixel.ensemble import MAX_CLAIMED, claimed_share
from pipeline.pixel.frames import View, refine, tighten, views
from pipeline.pixel.panels import panel_view
from pipeline.pixel.phi import Mode, decide
from pipeline.pixel.redact import RedactionResult, redact
from pipeline.pixel.types import (
    PixelFinding,
    Recognition,
    TextBox,
    TextDetector,
    TextRecognizer,
    group_regions,
    intersection,
    on_one_row,
)
from pipeline.profile.schema import DEFAULT_PIXEL, PixelSettings, RegionRule
from pipeline.text import HeaderContext, PhiTagger

CLEARED, PENDING, REJECTED = "cleared", "pending-review", "rejected"

#: Views the detector runs on. The inverted full-range view alone finds every PHI line
#: the window, full and inverted views find together on the synthetic corpus (dark text
#: on a light field is what PP-OCR was trained on; a bright overlay becomes that), at a
#: third of the cost. ``None`` runs every view.
DETECT_VIEWS: tuple[str, ...] | None = ("inverted",)

#: Text the detector found but the recogniser cannot read (empty, or a mean character
#: score under this) is redacted and flags the instance for review, whatever the
#: profile's entity filter: a demanding user expects no unread PHI to survive. Only
#: line-shaped regions (no taller than ``LINE_HEIGHT`` stored pixels, at least as wide as
#: tall) count: the detector also fires on speckle and anatomy, and blanking those would
#: black out the image (measured: 1% of the image area on the synthetic ultrasounds).
UNREADABLE = 0.5
LINE_HEIGHT = 48


@dataclass(frozen=True)
class PixelOutcome:
    """What the pixel stage found and did to one instance."""

    findings: tuple[PixelFinding, ...]
    redaction: RedactionResult | None
    views_scanned: int

    @property
    def requires_review(self) -> bool:
        """Whether any finding waits for a person."""
        return any(f.status == PENDING for f in self.findings)


@dataclass(frozen=True)
class PixelEngines:
    """The detector and recognizer the stage uses (injected; ONNX by default), and the
    array module of pixel views and redaction (None: :func:`pipeline.accel.pixel_module`
    chooses at each call, from ``$VEIL_DEVICE``)."""

    detector: TextDetector
    recognizer: TextRecognizer
    xp: ModuleType | None = None


def cpu_budget() -> int:
    """CPUs this process may use, read at the call: ``$OMP_NUM_THREADS`` when set (Ray
    sets it to an actor's ``num_cpus``), else the CPUs of its affinity mask."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


@functools.cache
def default_engines(
    det_threshold: float | None, box_threshold: float | None,
    detector: str = DEFAULT_PIXEL["detector"],
    threads: int | None = None,
    read_cache: int = DEFAULT_PIXEL["read_cache"],
) -> PixelEngines:
    """ONNX engines (``detector``: one of ``TEXT_DETECTORS``; PP-OCRv4 recognizer behind a
    cache of ``read_cache`` results, none at 0), built once per process, per thresholds
    and per ``threads`` (ONNX Runtime intra-op threads; :func:`cpu_budget` when None: its
    own default spawns one thread per physical core, which oversubscribes a process
    pinned to fewer)."""
    threads = cpu_budget() if threads is None else threads
    return PixelEngines(make_detector(detector, det_threshold, box_threshold, threads),
                        make_recognizer(threads, read_cache))


def make_recognizer(threads: int | None = None, read_cache: int = 0,
                    **options: Any) -> TextRecognizer:
    """The PP-OCRv4 recognizer (``options``: its batching, e.g. ``batch_size``), behind a
    :class:`~pipeline.pixel.cache.CachedRecognizer` of ``read_cache`` entries when > 0."""
    from pipeline.pixel.cache import with_read_cache
    from pipeline.pixel.ppocr import PPOCRRecognizer

    return with_read_cache(PPOCRRecognizer(intra_op_num_threads=threads, **options),
                           read_cache)


def make_detector(name: str, det_threshold: float | None = None,
                  box_threshold: float | None = None, threads: int | None = None,
                  **options: Any) -> TextDetector:
    """The in-process text detector ``name`` (one of ``TEXT_DETECTORS``), with the
    profile's DB thresholds applied to each detector it runs (``options``: further
    PP-OCRv4 settings, e.g. ``fold=False``).

    Raises
    ------
    ProfileError
        For a name that is not a text detector.
    """
    from pipeline.pixel.ppocr import PPOCRDetector

    if name == "ppocr-v4":
        return PPOCRDetector(thresh=det_threshold, box_thresh=box_threshold,
                             intra_op_num_threads=threads, **options)
    if name == "veil-text-detector":
        from pipeline.pixel.dbnet import VeilTextDetector

        return VeilTextDetector(thresh=det_threshold, box_thresh=box_threshold,
                                intra_op_num_threads=threads)
    if name == "ppocr-v4+veil-text-detector":
        from pipeline.pixel.ensemble import UnionDetector

        return UnionDetector(
            make_detector("ppocr-v4", det_threshold, box_threshold, threads, **options),
            make_detector("veil-text-detector", det_threshold, box_threshold, threads))
    from pipeline.errors import ProfileError

    raise ProfileError(f"unknown text detector {name!r}")


def engines_for(settings: PixelSettings) -> PixelEngines:
    """The default engines for a profile's pixel settings."""
    return default_engines(settings.det_threshold, settings.box_threshold,
                           settings.value("detector"), cpu_budget(),
                           int(settings.value("read_cache")))


def _matches(rule: RegionRule, ds: Dataset) -> bool:
    checks = {
        "modality": str(ds.get("Modality", "") or ""),
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "model": str(ds.get("ManufacturerModelName", "") or ""),
    }
    for field, actual in checks.items():
        wanted = getattr(rule, field)
        if wanted is not None and wanted.strip().upper() != actual.strip().upper():
            return False
    if rule.rows is not None and int(ds.get("Rows", 0) or 0) != rule.rows:
        return False
    return rule.columns is None or int(ds.get("Columns", 0) or 0) == rule.columns


def clean_pixels(
    ds: Dataset, settings: PixelSettings, context: HeaderContext, engines: PixelEngines,
    tagger: PhiTagger | None = None,
) -> PixelOutcome:
    """Find and redact burned-in PHI in ``ds`` (in place); return the findings.

    ``tagger`` reads the recognised text (the rule-based stack when None).
    """
    reading = _Reading(settings.value("mode"),
                       frozenset(settings.entities) if settings.entities else None,
                       settings.value("review_threshold"), bool(settings.value("follow_lines")),
                       context, tagger)
    margin = int(settings.value("margin"))
    found: list[tuple[TextBox, str, float, str, str]] = []
    regions = [TextBox(x0, y0, x1, y1, 1.0, -1) for rule in settings.regions or []
               if _matches(rule, ds) for x0, y0, x1, y1 in rule.boxes]
    scanned = 0
    if reading.mode != "none":
        for view in views(ds, names=DETECT_VIEWS, xp=engines.xp):
            scanned += 1
            boxes = engines.detector.detect(view.image)
            stored = {id(box): _ink_box(view, box, margin) for box in boxes}
            to_read = []
            for box in boxes:
                if stored[id(box)].area == 0:
                    continue
                if _inside(stored[id(box)], regions):  # blanked whatever it says: not read,
                    # but redacted in its own right, so its line goes with it (_extend_lines)
                    if not box.tentative:
                        found.append((stored[id(box)], "OTHER", 1.0, CLEARED, "region"))
                    continue
                settled = _settled(stored[id(box)], found)
                if settled is None:
                    to_read.append(box)
                elif not box.tentative:  # another view already read this region well
                    found.append((stored[id(box)], *settled[1:]))
            if to_read:
                texts = engines.recognizer.recognize(view.image, to_read)
                found.extend(_read(view, to_read, texts, stored, engines, reading))
            if settings.value("panel_pass"):
                found.extend(_panel_pass(view, boxes, regions, found, engines, reading,
                                         margin))
    found.extend((region, "OTHER", 1.0, CLEARED, "region") for region in regions)
    findings = _merge(_extend_lines(found))
    to_redact = [
        TextBox(*f.box, score=f.confidence, frame=f.frame)
        for f in findings if f.status != REJECTED
    ]
    if not to_redact:  # nothing to fill: the pixel data stays exactly as it was
        ds.BurnedInAnnotation = "NO"
        return PixelOutcome(tuple(findings), None, scanned)
    result = redact(ds, to_redact, fill=settings.value("fill"), margin=margin, xp=engines.xp)
    return PixelOutcome(tuple(findings), result, scanned)


@dataclass(frozen=True)
class _Reading:
    """What decides a read box: the profile's mode, entity filter, review threshold and
    line following, the file's header, and the free-text tagger (rules when None)."""

    mode: Mode
    entities: frozenset[str] | None
    threshold: float
    follow: bool
    context: HeaderContext
    tagger: PhiTagger | None


def _read(
    view: View, boxes: list[TextBox], texts: list[Recognition], stored: dict[int, TextBox],
    engines: PixelEngines, reading: _Reading,
) -> list[tuple[TextBox, str, float, str, str]]:
    """The findings of read ``boxes`` of ``view`` (``stored``: their stored ink boxes, by
    id): PHI (widened by line following), unreadable lines, and text read as not PHI
    (rejected); a tentative box not read as PHI leaves none."""
    phi = {id(f.box): f for f in decide(boxes, texts, reading.context, mode=reading.mode,
                                        entities=reading.entities, tagger=reading.tagger)}
    wider = follow_lines(view, [b for b in boxes if id(b) in phi],
                         engines.recognizer) if reading.follow else {}
    out: list[tuple[TextBox, str, float, str, str]] = []
    for box, text in zip(boxes, texts, strict=True):
        finding = phi.get(id(box))
        if finding is None and box.tentative:  # maybe not text: kept only as PHI
            continue
        if finding is None and _unreadable_line(stored[id(box)], text):
            out.append((stored[id(box)], "OTHER", text.score, PENDING, "unreadable"))
        elif finding is None:
            out.append((stored[id(box)], "OTHER", text.score, REJECTED, "detector"))
        else:
            status = CLEARED if finding.confidence >= reading.threshold else PENDING
            region = stored[id(box)]
            if id(box) in wider:
                region = _widen(view, region, box, *wider[id(box)])
            out.append((region, finding.entity, finding.confidence, status, finding.source))
    return out


def _panel_pass(
    view: View, boxes: list[TextBox], regions: list[TextBox],
    found: list[tuple[TextBox, str, float, str, str]], engines: PixelEngines,
    reading: _Reading, margin: int,
) -> list[tuple[TextBox, str, float, str, str]]:
    """Findings of the second detection pass over faint text on flat panels
    (:mod:`pipeline.pixel.panels`): boxes the first pass (``boxes``) did not find (under
    ``MAX_CLAIMED`` of them inside its boxes of their line scale: a first-pass box on the
    one letter that stands out does not hide the line), lying on a panel, read on the
    stretched view; a read under ``UNREADABLE`` is dropped (the
    stretch also draws edges of anatomy beside a panel; unread text there is not a
    line the first pass missed)."""
    panel = panel_view(view.image)
    if panel is None:
        return []
    stretched = replace(view, image=panel.image, native=None)
    sure = [box for box in boxes if not box.tentative]
    extra = [box for box in engines.detector.detect(panel.image)
             if panel.holds(box) and claimed_share(box, sure) < MAX_CLAIMED]
    stored = {id(box): _ink_box(stretched, box, margin) for box in extra}
    extra = [box for box in extra if stored[id(box)].area
             and not _inside(stored[id(box)], regions)
             and _settled(stored[id(box)], found) is None]
    if not extra:
        return []
    texts = engines.recognizer.recognize(panel.image, extra)
    kept = [(box, text) for box, text in zip(extra, texts, strict=True)
            if text.score >= UNREADABLE]
    if not kept:
        return []
    return _read(stretched, [b for b, _ in kept], [t for _, t in kept], stored, engines,
                 reading)


#: Line following (:func:`follow_lines`): how far beyond each end of a PHI box the line is
#: read again, the widest gap between two characters of one line, in text heights (the
#: height of the box's ink), and the least mean character score of such a read. A
#: character's position is its CTC steps, a narrow stretch inside the glyph, so gaps
#: between the positions of neighbours run up to about a height; two heights is also
#: what the stage's line rule (``_same_line``) takes for one line.
FOLLOW_REACH, FOLLOW_GAP, FOLLOW_SCORE = 3.0, 2.0, 0.6
#: Most stretches read beyond each end of one line.
FOLLOW_ROUNDS = 3
#: A stretch whose pixels (past the edge reached) span at most this many grey levels of
#: the view holds nothing drawn: it is not read (black bars, air around a CT).
FOLLOW_FLAT = 4
#: Added beyond the outermost character found, in text heights: character edges from
#: CTC steps fall a little inside the ink.
FOLLOW_PAD = 0.5


def follow_lines(view: View, boxes: list[TextBox], recognizer: TextRecognizer
                 ) -> dict[int, tuple[int, int]]:
    """Where the text lines of PHI ``boxes`` really end, by ``id(box)``: (x0, x1) in view
    pixels, for the boxes whose line goes on beyond their ink.

    A detector box can stop short of its line's ends: text drawn at one grey level over
    a background that brightens along the line fades out where the two meet (the "GA"
    of "GARCIA HOSPITAL", the "Dr." before a name), though the stored values still
    differ and a window setting shows it. The recogniser reads those glyphs when given
    the stretch beside the box: each end is read again over ``FOLLOW_REACH`` text
    heights (plus one box height of the line, for context), and characters that begin
    past the ink, chained to it by gaps under ``FOLLOW_GAP`` heights, extend it; when
    they run to the far end of that stretch, the next stretch is read (at most
    ``FOLLOW_ROUNDS``). A stretch with nothing drawn past the edge (``FOLLOW_FLAT``) is
    not read. Needs a recogniser that reports character positions
    (:attr:`Recognition.chars`); others change nothing.
    """
    width = view.image.shape[1]
    ends: list[_LineEnd] = []
    for box in boxes:
        ink = tighten(view.image, box)
        if ink.area == 0:
            continue
        if box.x0 > 0:
            ends.append(_LineEnd(box, ink, "left", float(ink.x0)))
        if box.x1 < width:
            ends.append(_LineEnd(box, ink, "right", float(ink.x1)))
    for _ in range(FOLLOW_ROUNDS):
        going = [end for end in ends if end.going]
        if not going:
            break
        windows = [_follow_window(end, width) for end in going]
        for end in going:
            end.going = False
        drawn = [(end, window) for end, window in zip(going, windows, strict=True)
                 if not _flat(view.image, window, end)]
        if not drawn:
            break
        for (end, window), read in zip(drawn, recognizer.recognize(
                view.image, [window for _, window in drawn]), strict=True):
            if read.score < FOLLOW_SCORE or not read.chars or len(read.chars) != len(read.text):
                continue
            marks = sorted((window.x0 + a * window.width, window.x0 + b * window.width)
                           for (a, b), ch in zip(read.chars, read.text, strict=True)
                           if not ch.isspace())
            gap, moved = FOLLOW_GAP * end.ink.height, end.edge
            if end.side == "left":  # characters that begin left of the edge, chained to it
                for start, stop in reversed([m for m in marks if m[0] < end.edge]):
                    if stop < moved - gap:
                        break
                    moved = start
                going_on = moved < end.edge and moved - window.x0 < gap and window.x0 > 0
            else:
                for start, stop in [m for m in marks if m[1] > end.edge]:
                    if start > moved + gap:
                        break
                    moved = stop
                going_on = moved > end.edge and window.x1 - moved < gap and window.x1 < width
            end.edge, end.going = moved, going_on
    out: dict[int, tuple[int, int]] = {}
    for end in ends:
        pad = max(1.0, FOLLOW_PAD * end.ink.height)
        lo, hi = out.get(id(end.box), (end.ink.x0, end.ink.x1))
        if end.side == "left" and end.edge < end.ink.x0:
            lo = max(0, math.floor(end.edge - pad))
        if end.side == "right" and end.edge > end.ink.x1:
            hi = min(width, math.ceil(end.edge + pad))
        if (lo, hi) != (end.ink.x0, end.ink.x1):
            out[id(end.box)] = (lo, hi)
    return out


@dataclass
class _LineEnd:
    """One end of a PHI line being followed: its detector box, the box's ink (view
    pixels), the side, the line's end reached so far, and whether to read further."""

    box: TextBox
    ink: TextBox
    side: str
    edge: float
    going: bool = True


def _flat(image: np.ndarray, window: TextBox, end: _LineEnd) -> bool:
    """Whether the part of ``window`` past ``end``'s edge spans at most ``FOLLOW_FLAT``
    grey levels (nothing drawn there to read)."""
    cut = round(end.edge)
    x0, x1 = (window.x0, min(window.x1, cut)) if end.side == "left" else (
        max(window.x0, cut), window.x1)
    part = image[window.y0:window.y1, x0:x1]
    return part.size == 0 or int(part.max()) - int(part.min()) <= FOLLOW_FLAT


def _follow_window(end: _LineEnd, width: int) -> TextBox:
    """The stretch of ``end``'s line read next, from the edge reached so far (the first
    time: the box's own end, one box height inside it for context)."""
    box, edge = end.box, end.edge
    reach, context = round(FOLLOW_REACH * end.ink.height), box.height
    if end.side == "left":
        inner = min(box.x1, box.x0 + context) if edge >= box.x0 else round(edge) + context
        return TextBox(max(0, round(edge) - reach if edge < box.x0 else box.x0 - reach),
                       box.y0, min(width, inner), box.y1, box.score, box.frame)
    inner = max(box.x0, box.x1 - context) if edge <= box.x1 else round(edge) - context
    return TextBox(max(0, inner), box.y0,
                   min(width, round(edge) + reach if edge > box.x1 else box.x1 + reach),
                   box.y1, box.score, box.frame)


def _widen(view: View, region: TextBox, box: TextBox, x0: int, x1: int) -> TextBox:
    """``region`` (stored) widened to the view columns ``x0..x1`` of its line."""
    line = view.to_stored(TextBox(x0, box.y0, x1, box.y1, box.score, box.frame))
    return TextBox(min(region.x0, line.x0), region.y0, max(region.x1, line.x1), region.y1,
                   region.score, region.frame)


def _ink_box(view: View, box: TextBox, margin: int) -> TextBox:
    """The stored-coordinate ink box of a detector box: tightened on the view, mapped to
    the nearest stored pixel, then refined on the stored-resolution rendering when the
    margin (at least 1) covers what refining may give up."""
    stored = view.ink_to_stored(tighten(view.image, box))
    return refine(view, stored) if margin >= 1 else stored


def _inside(box: TextBox, regions: list[TextBox]) -> bool:
    """Whether ``box`` lies wholly inside one region rule's box (redacted on every frame,
    so its text cannot change what is filled: it is not read)."""
    return any(r.x0 <= box.x0 and r.y0 <= box.y0 and box.x1 <= r.x1 and box.y1 <= r.y1
               for r in regions)


def _unreadable_line(box: TextBox, text: Recognition) -> bool:
    """Whether a region is a text line the recogniser could not read (see UNREADABLE)."""
    return text.score < UNREADABLE and box.height <= LINE_HEIGHT and box.width >= box.height


#: Most height ratio of two boxes on one text line (a label and its value are drawn in
#: one font; a detector box over speckle or anatomy beside a line is not its neighbour).
LINE_HEIGHT_RATIO = 2.0


def _same_line(a: TextBox, b: TextBox) -> bool:
    """Whether two boxes of one frame are neighbours on one text line: of like height
    (``LINE_HEIGHT_RATIO``), overlapping vertically by half the lower one, at most two
    heights apart."""
    return on_one_row(a, b, LINE_HEIGHT_RATIO, 2.0)


def _extend_lines(
    found: list[tuple[TextBox, str, float, str, str]],
) -> list[tuple[TextBox, str, float, str, str]]:
    """Redact whole lines: text next to PHI on its line ("Acc:", "DOB") goes with it.

    A label and its value are often detected as separate boxes; the label alone is
    not PHI, but leaving it while blanking its value shows what was there and, when
    the split is wrong, leaves part of the value. Applied until no box changes.
    """
    items = list(found)
    changed = True
    while changed:
        changed = False
        for index, item in enumerate(items):
            if item[3] != REJECTED:
                continue
            for other in items:
                if other[3] != REJECTED and _same_line(item[0], other[0]):
                    items[index] = (item[0], other[1], other[2], other[3], "line")
                    changed = True
                    break
    return items


#: A region read as not PHI with at least this recognition score is not read again in
#: the other views of its frame (a confident read); a weaker one is, in case another
#: view's contrast reads PHI there.
CONFIDENT_READ = 0.9


def _settled(
    box: TextBox, found: list[tuple[TextBox, str, float, str, str]]
) -> tuple[TextBox, str, float, str, str] | None:
    """A finding of another view or pass that already decides ``box`` (redacted or
    confidently not PHI) and holds most of it, or None when the region must be read
    here. A confident read of one letter that stands out does not decide the faint line
    it starts."""
    for item in found:
        if _share_inside(box, item[0]) > 0.5 and (
                item[3] != REJECTED or item[2] >= CONFIDENT_READ):
            return item
    return None


def _share_inside(box: TextBox, other: TextBox) -> float:
    """Share of ``box``'s area inside ``other`` (0 when they lie on different frames)."""
    if box.frame != other.frame:
        return 0.0
    return intersection(box, other) / max(box.area, 1)


def _merge(found: list[tuple[TextBox, str, float, str, str]]) -> list[PixelFinding]:
    """One finding per region: boxes of different views overlapping mostly are merged.

    A merged region is redacted if any of its boxes was PHI; it keeps the most
    protective status (cleared or pending over rejected) and the highest confidence.
    A redacted region spans its redacted boxes and the boxes read as not PHI that are
    of their line scale (``_extent``).
    """
    rank = {CLEARED: 2, PENDING: 1, REJECTED: 0}
    out = []
    for group in group_regions(found, lambda item: item[0]):
        best = max(group, key=lambda g: (rank[g[3]] > 0, g[2]))
        status = max((g[3] for g in group), key=lambda s: rank[s])
        boxes = [g[0] for g in group] if status == REJECTED else _extent(group)
        box = (min(b.x0 for b in boxes), min(b.y0 for b in boxes),
               max(b.x1 for b in boxes), max(b.y1 for b in boxes))
        out.append(PixelFinding(group[0][0].frame, box, best[1], round(best[2], 4), status,
                                best[4]))
    return out


def _extent(group: list[tuple[TextBox, str, float, str, str]]) -> list[TextBox]:
    """The boxes a redacted region spans: its redacted ones, and those read as not PHI
    at most ``LINE_HEIGHT_RATIO`` times as tall as the tallest redacted one (another
    view's box of the same line may reach further along it; a box many lines tall that
    holds the line, a detector's box over ultrasound texture, is not the line)."""
    marked = [g[0] for g in group if g[3] != REJECTED]
    tallest = max(box.height for box in marked)
    return marked + [g[0] for g in group
                     if g[3] == REJECTED and g[0].height <= LINE_HEIGHT_RATIO * tallest]
