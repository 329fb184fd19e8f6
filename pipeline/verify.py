"""``veil verify``: an independent second pass over de-identified output.

Nothing the first pass did is trusted: every file under a folder is read again and
searched for residual PHI.

* Header: Patient Identity Removed must be ``YES``; every person name (sequences too)
  must be empty, a placeholder or a pseudonym; every free-text value (LO, SH, ST, LT,
  UT, UC, PN) is run through the pattern and dictionary taggers (not the header tagger:
  the original header is gone) and any NAME, ID, DATE, PHONE, EMAIL, URL, LOCATION or
  AGE span is a suspect, except the values Veil itself writes (De-identification Method,
  its code sequence, dummies such as ``ANONYMIZED``, placeholders such as ``[NAME]``).
  DA / DT values are suspects when Longitudinal Temporal Information Modified is
  ``UNMODIFIED`` (or absent: nothing says the dates were changed), information
  otherwise. Private elements that remain are listed as information with their creator.
* Pixels: every view of every frame is read by the OCR chain; every text region read
  with a recognition score of at least 0.5 is a suspect, with the entity the pixel-PHI
  classifier gives it (``OTHER`` when it sees no PHI): text left in a de-identified
  image needs a human look. Burned In Annotation ``YES`` is a suspect too.

Suspects and information say where and what kind, never the text: a header
suspect's ``where`` is a tag path such as ``(0008,1140)[0].(0008,1070)``, a pixel
suspect's is ``frame N box [x0,y0,x1,y1]`` (zero-based frame, stored pixel coordinates).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from pipeline import __version__
from pipeline.errors import InputError, VeilError
from pipeline.io.reader import read_instance
from pipeline.io.report import UsageError, write_json_atomic
from pipeline.io.sources import iter_sources
from pipeline.pixel.frames import views
from pipeline.pixel.phi import decide
from pipeline.pixel.stage import PixelEngines
from pipeline.pixel.types import TextBox, group_regions
from pipeline.selectors import format_tag
from pipeline.text import CompositeTagger, DictionaryTagger, HeaderContext, PatternTagger
from pipeline.text.spans import fold
from pipeline.text.vocabulary import name_dictionary
from pipeline.values import private_creator
from pipeline.vr import DATE_VRS, DUMMY, TEXT_VRS

__all__ = [
    "FileVerdict",
    "InfoEntry",
    "Suspect",
    "VerifyReport",
    "check_header",
    "check_pixels",
    "check_report_path",
    "verify_dataset",
    "verify_file",
    "verify_folder",
    "write_verify_report",
]

Kind = Literal["header", "pixel"]
VerifyStatus = Literal["clean", "suspect", "skipped", "failed"]
VERIFY_STATUSES: tuple[VerifyStatus, ...] = ("clean", "suspect", "skipped", "failed")

#: Entities whose spans in a kept text value are suspects.
SUSPECT_ENTITIES = frozenset({"NAME", "ID", "DATE", "PHONE", "EMAIL", "URL", "LOCATION", "AGE"})
#: Lowest recognition score of a pixel text region that is reported.
MIN_TEXT_SCORE = 0.5

_PATIENT_IDENTITY_REMOVED = 0x00120062
_DEID_METHOD = 0x00120063
_DEID_METHOD_CODES = 0x00120064
_BURNED_IN = 0x00280301
_TEMPORAL = 0x00280303
_CODE_VALUE = 0x00080100
_CODING_SCHEME = 0x00080102
_CODING_SCHEME_VERSION = 0x00080103
#: Coding schemes whose code values are concept codes, not local identifiers.
_STANDARD_SCHEMES = frozenset({
    "DCM", "SCT", "SRT", "LN", "UCUM", "FMA", "RADLEX", "NCIT", "UMLS", "ICD10", "ACR",
    "99SDM", "SNM3", "MDC", "BARI", "NCDR", "UNII", "RXNORM", "NEU", "I11", "ISO3166_1",
})
_SAFE_VALUES = frozenset(str(v).upper() for v in DUMMY.values() if isinstance(v, str))
_PLACEHOLDER = re.compile(r"\[(?:NAME|ID|DATE|AGE|INSTITUTION|LOCATION|PHONE|EMAIL|URL|OTHER)\]")
_NAME_PART = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*")


class Suspect(BaseModel):
    """Possible residual PHI: where and what kind, never the value."""

    where: str
    kind: Kind
    entity: str
    score: float
    reason: str = ""


class InfoEntry(BaseModel):
    """Something worth knowing that is not a suspect (a shifted date, a private element)."""

    where: str
    kind: Kind
    what: str
    entity: str | None = None
    creator: str | None = None


class FileVerdict(BaseModel):
    """The verdict on one file."""

    path: str
    status: VerifyStatus
    reason: str | None = None
    suspects: list[Suspect] = Field(default_factory=list)
    info: list[InfoEntry] = Field(default_factory=list)


class VerifyTotals(BaseModel):
    """Counts over the whole folder."""

    files: int
    counts: dict[str, int]
    suspects: int
    header_suspects: int
    pixel_suspects: int


class VerifyReport(BaseModel):
    """The whole verify report."""

    veil_version: str
    folder: str
    pixels_checked: bool
    totals: VerifyTotals
    files: list[FileVerdict]

    @property
    def flagged(self) -> bool:
        """Whether any file is a suspect or failed."""
        return any(f.status in ("suspect", "failed") for f in self.files)


# --- header ------------------------------------------------------------------------------


@functools.cache
def _text_tagger() -> CompositeTagger:
    """Pattern and dictionary taggers (no header tagger: the original header is gone)."""
    return CompositeTagger([PatternTagger(), DictionaryTagger()])


def _values(elem: DataElement) -> list[str]:
    """The non-empty string values of an element."""
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    return [s for s in (str(v).strip(" \x00") for v in items if v is not None) if s]


def _walk(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, DataElement, Dataset]]:
    """Every element with its path (sequences recursed) and the dataset holding it."""
    for elem in ds:
        path = prefix + format_tag(int(elem.tag))
        yield path, elem, ds
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or []):
                yield from _walk(item, f"{path}[{index}].")


def _is_veil_written(path: str, tag: int, holder: Dataset) -> bool:
    """Values Veil writes, or concept codes: not searched for PHI."""
    if tag == _DEID_METHOD or path.startswith(format_tag(_DEID_METHOD_CODES) + "["):
        return True
    if tag in (_CODING_SCHEME, _CODING_SCHEME_VERSION):
        return True
    if tag == _CODE_VALUE:
        scheme = str(holder.get(_CODING_SCHEME).value if _CODING_SCHEME in holder else "")
        return scheme.strip().upper() in _STANDARD_SCHEMES
    return False


def _masked(text: str) -> str:
    """``text`` with Veil's placeholders blanked (same length)."""
    return _PLACEHOLDER.sub(lambda m: " " * len(m.group(0)), text)


def _looks_like_real_name(value: str) -> bool:
    """True for ``Family^Given`` whose two parts are both dictionary names."""
    group = value.split("=")[0]
    parts = group.split("^")
    if len(parts) < 2:
        return False
    names = name_dictionary().all
    family, given = parts[0].strip(), parts[1].strip()
    for part in (family, given):
        words = _NAME_PART.findall(fold(part).upper())
        if not words or not any(len(w) >= 2 and w in names for w in words):
            return False
    return True


def _text_suspects(path: str, elem: DataElement) -> dict[tuple[str, str], Suspect]:
    """Suspects of one text element, one per entity."""
    found: dict[tuple[str, str], Suspect] = {}

    def add(entity: str, score: float, reason: str) -> None:
        key = (path, entity)
        if key not in found or found[key].score < score:
            found[key] = Suspect(where=path, kind="header", entity=entity,
                                 score=round(score, 4), reason=reason)

    for value in _values(elem):
        if value.upper() in _SAFE_VALUES:
            continue
        text = _masked(value)
        for span in _text_tagger().tag(text, HeaderContext()):
            if span.entity in SUSPECT_ENTITIES:
                add(span.entity, span.confidence, f"{span.source} tagger found {span.entity}")
        if elem.VR == "PN" and _looks_like_real_name(text):
            add("NAME", 0.7, "person name shaped Family^Given with dictionary names")
    return found


def check_header(ds: Dataset) -> tuple[list[Suspect], list[InfoEntry]]:
    """Return the header suspects and information of ``ds`` (not modified).

    Parameters
    ----------
    ds
        A de-identified dataset.

    Returns
    -------
    tuple of (list of Suspect, list of InfoEntry)
        In element order.
    """
    suspects: list[Suspect] = []
    info: list[InfoEntry] = []
    removed = str(ds.get("PatientIdentityRemoved", "") or "").strip().upper()
    if removed != "YES":
        suspects.append(Suspect(where=format_tag(_PATIENT_IDENTITY_REMOVED), kind="header",
                                entity="OTHER", score=1.0,
                                reason="Patient Identity Removed is not YES"))
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        suspects.append(Suspect(where=format_tag(_BURNED_IN), kind="pixel", entity="OTHER",
                                score=1.0, reason="Burned In Annotation is YES"))
    temporal = str(ds.get("LongitudinalTemporalInformationModified", "") or "").strip().upper()
    dates_changed = temporal in ("MODIFIED", "REMOVED")
    for path, elem, holder in _walk(ds):
        tag = int(elem.tag)
        if elem.tag.is_private and not elem.tag.is_private_creator:
            info.append(InfoEntry(where=path, kind="header", what="private element remains",
                                  creator=private_creator(holder, tag)))
        if elem.VR in DATE_VRS:
            values = [v for v in _values(elem) if v not in _SAFE_VALUES
                      and v != DUMMY["DA"] and v != DUMMY["DT"]]
            if not values:
                continue
            if dates_changed:
                info.append(InfoEntry(where=path, kind="header", entity="DATE",
                                      what=f"date kept (dates {temporal.lower()})"))
            else:
                why = "UNMODIFIED" if temporal == "UNMODIFIED" else "absent"
                suspects.append(Suspect(
                    where=path, kind="header", entity="DATE", score=1.0,
                    reason=f"date with Longitudinal Temporal Information Modified {why}"))
            continue
        if elem.VR not in TEXT_VRS or elem.tag.is_private_creator:
            continue
        if _is_veil_written(path, tag, holder):
            continue
        suspects.extend(_text_suspects(path, elem).values())
    return suspects, info


# --- pixels ------------------------------------------------------------------------------


@functools.cache
def _default_engines() -> PixelEngines:
    """The OCR chain with the default pixel settings of clean-pixel-data."""
    from pipeline.pixel.stage import engines_for  # ONNX Runtime: load on use
    from pipeline.profile import load_profile

    return engines_for(load_profile("dicom-basic", ["clean-pixel-data"]).pixel)


def check_pixels(ds: Dataset, engines: PixelEngines,
                 *, min_score: float = MIN_TEXT_SCORE) -> list[Suspect]:
    """Return one pixel suspect per text region read in any view of any frame.

    Regions of different views of the same frame that mostly overlap are merged; a
    merged region keeps the PHI entity if any view gave one, and the highest score.

    Raises
    ------
    DeidError
        When the pixel data cannot be decoded or rendered.
    """
    found: list[tuple[TextBox, str, float]] = []
    for view in views(ds):
        boxes = engines.detector.detect(view.image)
        if not boxes:
            continue
        texts = engines.recognizer.recognize(view.image, boxes)
        phi = {id(f.box): f.entity
               for f in decide(boxes, texts, HeaderContext(), mode="phi-only")}
        for box, rec in zip(boxes, texts, strict=True):
            if not rec.text.strip() or rec.score < min_score:
                continue
            stored = view.to_stored(box)
            if stored.area == 0:
                continue
            found.append((stored, phi.get(id(box), "OTHER"), rec.score))
    out = []
    for group in group_regions(found, lambda item: item[0]):
        boxes = [g[0] for g in group]
        phi_items = [g for g in group if g[1] != "OTHER"]
        entity = max(phi_items, key=lambda g: g[2])[1] if phi_items else "OTHER"
        x0, y0 = min(b.x0 for b in boxes), min(b.y0 for b in boxes)
        x1, y1 = max(b.x1 for b in boxes), max(b.y1 for b in boxes)
        reason = "text in the image" + ("" if entity == "OTHER" else f" tagged {entity}")
        out.append(Suspect(where=f"frame {boxes[0].frame} box [{x0},{y0},{x1},{y1}]",
                           kind="pixel", entity=entity,
                           score=round(max(g[2] for g in group), 4), reason=reason))
    return out


def verify_dataset(
    ds: Dataset, *, pixels: bool = True, engines: PixelEngines | None = None
) -> tuple[list[Suspect], list[InfoEntry]]:
    """Return the suspects and information of one dataset.

    Parameters
    ----------
    ds
        A de-identified dataset (not modified).
    pixels
        Whether to read the pixel data with the OCR chain.
    engines
        The OCR engines; when None, the PP-OCRv4 chain with the default settings of
        clean-pixel-data (loaded only when there is pixel data to read).
    """
    suspects, info = check_header(ds)
    if pixels and "PixelData" in ds and ds.get("PixelData") is not None:
        suspects.extend(check_pixels(ds, engines or _default_engines()))
    return suspects, info


def verify_file(
    path: Path, root: Path, *, pixels: bool = True,
    engines: PixelEngines | None = None,
) -> FileVerdict:
    """Verify one file; never raises for a bad file (its status says why)."""
    rel = os.path.relpath(path, root)
    try:
        ds = read_instance(path)
    except InputError as exc:
        status: VerifyStatus = "skipped" if exc.status == "skipped" else "failed"
        return FileVerdict(path=rel, status=status, reason=str(exc))
    try:
        suspects, info = verify_dataset(ds, pixels=pixels, engines=engines)
    except VeilError as exc:  # messages name causes, never values
        return FileVerdict(path=rel, status="failed", reason=str(exc))
    except Exception as exc:  # the text of a foreign exception may quote a value
        return FileVerdict(path=rel, status="failed",
                           reason=f"cannot verify ({type(exc).__name__})")
    return FileVerdict(path=rel, status="suspect" if suspects else "clean",
                       suspects=suspects, info=info)


def verify_folder(
    folder: str | os.PathLike[str], *, pixels: bool = True,
    engines: PixelEngines | None = None,
) -> VerifyReport:
    """Verify every file under ``folder`` (recursively, sorted).

    Raises
    ------
    UsageError
        When ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise UsageError("verify needs an existing folder")
    files = [verify_file(p, root, pixels=pixels, engines=engines) for p in iter_sources([root])]
    counts: dict[str, int] = {
        status: sum(f.status == status for f in files) for status in VERIFY_STATUSES
    }
    every = [s for f in files for s in f.suspects]
    totals = VerifyTotals(
        files=len(files), counts=counts, suspects=len(every),
        header_suspects=sum(s.kind == "header" for s in every),
        pixel_suspects=sum(s.kind == "pixel" for s in every),
    )
    return VerifyReport(veil_version=__version__, folder=str(root), pixels_checked=pixels,
                        totals=totals, files=files)


def check_report_path(report: str | os.PathLike[str], folder: str | os.PathLike[str]) -> Path:
    """Return ``report`` resolved; raise :class:`UsageError` if it lies inside ``folder``."""
    resolved = Path(report).resolve()
    root = Path(folder).resolve()
    if resolved == root or resolved.is_relative_to(root):
        raise UsageError("the verify report must not be written inside the verified folder")
    return resolved


def write_verify_report(report: VerifyReport, path: str | os.PathLike[str]) -> None:
    """Write the report atomically (mode 0600: paths can be sensitive)."""
    write_json_atomic(path, report.model_dump(mode="json"))
