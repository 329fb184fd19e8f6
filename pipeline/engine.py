"""De-identify one pydicom Dataset with a compiled profile. Pure: no file or network I/O."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline import __version__, dates
from pipeline.actions import (
    HANDLERS,
    AttributeAction,
    DeidContext,
    Pseudonym,
    clean_string,
    describe_actions,
)
from pipeline.errors import DeidError
from pipeline.keys import Keyring
from pipeline.profile.compiler import CompiledProfile, Decision
from pipeline.selectors import format_tag
from pipeline.text import (
    HeaderCollector,
    HeaderContext,
    HeaderValueTagger,
    default_tagger,
    relevant,
)
from pipeline.values import private_creator, string_values

if TYPE_CHECKING:
    from pipeline.pixel.stage import PixelEngines, PixelOutcome
    from pipeline.pixel.types import PixelFinding

from pipeline.vr import BYTES_VRS, DATE_VRS, NUMBER_VRS, STRING_VRS, TEXT_VRS

__all__ = ["AttributeAction", "DeidResult", "Pseudonym", "deidentify", "describe_actions", "plan"]


#: Root of Veil's implementation UID (a 2.25 UID derived from the project's name).
IMPLEMENTATION_UID = "2.25." + str(int.from_bytes(hashlib.sha256(b"veil").digest()[:16], "big"))
#: VRs the residual sweep looks into (values that can carry copied identifiers).
_SWEEP_VRS = STRING_VRS - {"UI", "DA", "DT", "TM", "DS", "IS", "AS"}
#: Modalities and SOP classes whose pixels often carry burned-in text.
_BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XA", "RF", "ES", "DX", "CR", "MG", "IO"})
_FILE_META_DROP = (0x00020016, 0x00020017, 0x00020018, 0x00020100, 0x00020102)
_CLINICAL_TRIAL = {
    "ClinicalTrialSponsorName": "sponsor_name",
    "ClinicalTrialProtocolID": "protocol_id",
    "ClinicalTrialProtocolName": "protocol_name",
}


@dataclass(frozen=True)
class DeidResult:
    """A de-identified dataset and everything done to it."""

    dataset: Dataset
    actions: tuple[AttributeAction, ...]
    warnings: tuple[str, ...]
    pseudonyms: tuple[Pseudonym, ...]
    study_uid: str
    series_uid: str
    sop_uid: str
    pixel_findings: tuple[PixelFinding, ...] = ()
    requires_review: bool = False


def _patient_key(ds: Dataset) -> tuple[str, str]:
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if patient_id:
        issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
        return f"id\x00{patient_id}\x00{issuer}", ""
    name = str(ds.get("PatientName", "") or "").strip().upper()
    birth = str(ds.get("PatientBirthDate", "") or "").strip()
    if name:
        return f"name\x00{name}\x00{birth}", "patient key from name and birth date"
    study = str(ds.get("StudyInstanceUID", "") or "")
    return f"study\x00{study}", "no patient identity: pseudonyms and date shift keyed by study"


def _reference_date(ds: Dataset) -> dt.date | None:
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        value = str(ds.get(keyword, "") or "")
        if value.strip():
            try:
                return dates.parse_da(value)
            except ValueError:
                continue
    return None


def _element_vr(ds: Dataset, tag: int) -> str:
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if not vr or vr in _AMBIGUOUS_VRS or (vr == "UN" and not (tag >> 16) & 1):
        vr = ds[tag].VR  # implicit VR, ambiguous, or a public tag sent as UN: pydicom resolves
    return str(vr)


#: VRs whose "clean" needs no header values (dates shift, UIDs remap...): done at once.
_CLEAN_NOW_VRS = DATE_VRS | NUMBER_VRS | BYTES_VRS | {"UI", "SQ", "TM", "AT", "DS", "IS"}
_AMBIGUOUS_VRS = frozenset({"US or SS", "US or OW", "OB or OW", "US or SS or OW"})
#: Separator between values in the batched sweep: no header pattern can match across it.
_SWEEP_JOIN = "\x00|\x00"


_tag_text = functools.lru_cache(maxsize=65536)(format_tag)


@functools.lru_cache(maxsize=65536)
def _keyword(tag: int) -> str:
    return keyword_for_tag(tag) or ""


class _Walker:
    """Applies decisions to every element, recursing into sequences.

    The walk also collects the file's certain-PHI values (names, IDs, dates...) as it
    goes; free-text cleaning needs all of them, so it runs after the walk
    (:meth:`finish`), followed by the residual sweep of kept attributes.
    """

    def __init__(self, ctx: DeidContext, sweep: bool, include_institution: bool) -> None:
        self.ctx = ctx
        self.compiled = ctx.compiled
        self.sweep = sweep
        self.collector = HeaderCollector(include_institution)
        self.deferred: list[tuple[Dataset, int, str, str, Decision, bool]] = []
        self.candidates: list[tuple[Dataset, int, str, str, str]] = []

    def walk(self, ds: Dataset, prefix: str, deep: bool, parent: str = "") -> None:
        creators: list[int] = []
        for base_tag in list(ds.keys()):
            tag = int(base_tag)
            element = tag & 0xFFFF
            if element == 0 or tag >> 16 == 0:
                # group lengths are retired; command elements never belong in a stored file
                del ds[tag]
                continue
            private = bool((tag >> 16) & 1)
            if private and element < 0x100:
                creators.append(tag)
                continue
            vr = _element_vr(ds, tag)
            path = prefix + _tag_text(tag)
            creator = private_creator(ds, tag) if private else None
            keyword = "" if private else _keyword(tag)
            if vr != "SQ" and relevant(keyword, vr, parent):
                self.collector.add(keyword, parent, vr, string_values(ds, tag, vr))
            if private and creator is None:
                del ds[tag]
                self.ctx.record(path, tag, vr, "drop", "private", "private element without creator")
                continue
            decision = self.compiled.decide(tag, vr, creator)
            self.apply(ds, tag, vr, decision, path, deep, keyword or parent)
        for tag in creators:
            block = (tag & 0xFF) << 8
            group = tag & 0xFFFF0000
            if not any(group | block <= int(t) <= group | block | 0xFF for t in ds.keys()):  # noqa: SIM118 (iterating a Dataset yields elements)
                del ds[tag]

    def apply(
        self, ds: Dataset, tag: int, vr: str, decision: Decision, path: str, deep: bool,
        parent: str,
    ) -> None:
        action = decision.action
        if vr == "SQ":
            items = ds[tag].value or []
            if action in ("keep", "clean", "uid-remap"):
                # U on a sequence (X/Z/U*): keep it; the UIDs of its items are remapped by theirs
                inner = deep or action == "clean"
                if action == "clean":
                    self.ctx.record(path, tag, vr, "clean", decision.source, "items cleaned")
                for index, item in enumerate(items):
                    self.walk(item, f"{path}[{index}].", inner, parent)
                return
            for item in items:  # removed, but what it held is PHI that may be copied elsewhere
                self.collector.walk(item, parent, 1)
        elif action == "keep":
            if not decision.source.startswith("rule:"):
                if deep and vr in TEXT_VRS:
                    self.deferred.append((ds, tag, vr, path, decision, True))
                elif self.sweep and vr in _SWEEP_VRS:
                    text = "\\".join(string_values(ds, tag, vr))
                    if text:
                        self.candidates.append((ds, tag, vr, path, text))
            return
        elif action == "clean" and vr not in _CLEAN_NOW_VRS:
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
        joined = _SWEEP_JOIN.join(texts)
        spans = self.ctx.header_tagger.tag(joined, self.ctx.header)
        if not spans:
            return
        starts, position = [], 0
        for text in texts:
            starts.append(position)
            position += len(text) + len(_SWEEP_JOIN)
        hit = set()
        for span in spans:
            for index, start in enumerate(starts):
                if span.start < start + len(texts[index]) and span.end > start:
                    hit.add(index)
        for index in sorted(hit):
            ds, tag, vr, path, _ = self.candidates[index]
            if clean_string(ds, tag, vr, self.ctx, self.ctx.header_tagger):
                self.ctx.record(path, tag, vr, "clean", "sweep", "header value copied here")


def _context(ds: Dataset, compiled: CompiledProfile, keyring: Keyring) -> tuple[DeidContext, str]:
    patient_key, note = _patient_key(ds)
    subject = None
    if compiled.trial is not None:
        patient_id = str(ds.get("PatientID", "") or "").strip()
        subject = compiled.trial.get(patient_id)
        if subject is None:
            raise DeidError("patient is not listed in the trial mapping; not de-identified")
    ctx = DeidContext(
        keyring=keyring,
        compiled=compiled,
        header=HeaderContext(),
        tagger=default_tagger(),
        header_tagger=HeaderValueTagger(),
        patient_key=patient_key,
        reference_date=_reference_date(ds),
        subject=subject,
        pseudo_id=keyring.text("patient-id", patient_key, 16),
    )
    return ctx, note


def _has_pixels(ds: Dataset) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds


def _warnings(ds: Dataset, cleans_pixels: bool) -> list[str]:
    warnings: list[str] = []
    if cleans_pixels:
        return warnings  # the pixel stage scans every frame; its findings say what it did
    if _has_pixels(ds):
        burned = str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES"
        modality = str(ds.get("Modality", "") or "").upper()
        if burned or modality in _BURNED_IN_MODALITIES:
            why = "BurnedInAnnotation is YES" if burned else f"modality {modality} often has it"
            warnings.append(
                f"pixel data may hold burned-in text ({why}); pixels were left unchanged: "
                "review required"
            )
    else:
        warnings.append("no pixel data: metadata only")
    return warnings


def _clean_pixels(
    ds: Dataset, compiled: CompiledProfile, ctx: DeidContext, engines: PixelEngines | None
) -> PixelOutcome:
    from pipeline.pixel.stage import clean_pixels, engines_for  # ONNX Runtime: load on use

    settings = compiled.profile.pixel
    outcome = clean_pixels(ds, settings, ctx.header, engines or engines_for(settings))
    counts = {status: sum(f.status == status for f in outcome.findings)
              for status in ("cleared", "pending-review", "rejected")}
    note = ", ".join(f"{n} {status}" for status, n in counts.items())
    ctx.record("(7FE0,0010)", 0x7FE00010, "OB", "clean-pixels", "option:clean-pixel-data",
               f"{outcome.views_scanned} view(s) scanned; {note}")
    return outcome


def _finish(ds: Dataset, compiled: CompiledProfile, ctx: DeidContext) -> None:
    if ctx.subject is not None:
        trial = compiled.profile.trial
        for keyword, setting in _CLINICAL_TRIAL.items():
            value = getattr(trial, setting)
            if value:
                setattr(ds, keyword, value)
        ds.ClinicalTrialSubjectID = ctx.subject.subject_id
        ds.ClinicalTrialSiteID = ctx.subject.site_id
        if ctx.subject.site_name:
            ds.ClinicalTrialSiteName = ctx.subject.site_name
        ds.PatientID = ctx.subject.subject_id
        ds.PatientName = ctx.subject.subject_id
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [
        f"Veil {__version__}"[:64],
        f"profile {compiled.name} sha256:{compiled.content_hash[:16]}"[:64],
    ]
    items = []
    for code, meaning in compiled.codes:
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    ds.LongitudinalTemporalInformationModified = compiled.temporal
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for tag in _FILE_META_DROP:
            if tag in meta:
                del meta[tag]
        if "SOPInstanceUID" in ds:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "SOPClassUID" in ds:
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.ImplementationClassUID = IMPLEMENTATION_UID
        meta.ImplementationVersionName = f"VEIL_{__version__}"[:16]


def deidentify(
    ds: Dataset,
    compiled: CompiledProfile,
    keyring: Keyring,
    *,
    in_place: bool = False,
    pixel_engines: PixelEngines | None = None,
) -> DeidResult:
    """De-identify ``ds`` with ``compiled``; return the result and what was done.

    Parameters
    ----------
    ds
        The dataset (with ``file_meta`` when it comes from a file).
    compiled
        A compiled profile (:func:`pipeline.profile.compile_profile`).
    keyring
        The secret key that all pseudonyms derive from.
    in_place
        Modify ``ds`` itself instead of a deep copy (faster; the caller owns ``ds``).
    pixel_engines
        Text detector and recognizer for clean-pixel-data (default: PP-OCRv4 on ONNX
        Runtime, loaded once per process).

    Raises
    ------
    DeidError
        When any element cannot be handled; the dataset must then not be written.
    """
    if not in_place:
        ds = copy.deepcopy(ds)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise DeidError(f"missing {keyword}")
    ctx, note = _context(ds, compiled, keyring)
    cleans_pixels = "clean-pixel-data" in compiled.options and _has_pixels(ds)
    warnings = _warnings(ds, cleans_pixels)
    if note:
        warnings.append(note)
    retain_institution = "retain-institution-identity" in compiled.options
    walker = _Walker(ctx, compiled.profile.residual_sweep, not retain_institution)
    try:
        walker.walk(ds, "", deep=False)
        walker.finish()
        pixel = _clean_pixels(ds, compiled, ctx, pixel_engines) if cleans_pixels else None
    except DeidError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        raise DeidError(f"cannot process an element ({type(exc).__name__})") from exc
    _finish(ds, compiled, ctx)
    if pixel is not None and pixel.requires_review:
        warnings.append("pixel findings under the review threshold: requires review")
    pseudonyms = [Pseudonym(kind, orig, new) for (kind, orig), new in ctx.pseudonyms.items()]
    if ctx.subject is None:
        pseudonyms.append(Pseudonym("patient", ctx.patient_key.split("\x00")[1], ctx.pseudo_id))
    return DeidResult(
        dataset=ds,
        actions=tuple(ctx.actions),
        warnings=tuple(warnings),
        pseudonyms=tuple(pseudonyms),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        pixel_findings=pixel.findings if pixel else (),
        requires_review=bool(pixel and pixel.requires_review),
    )


def _elements(ds: Dataset, prefix: str = "") -> list[tuple[str, DataElement]]:
    """Every element with its path as the engine writes it (sequences recursed)."""
    found = []
    for element in ds:
        path = prefix + _tag_text(int(element.tag))
        found.append((path, element))
        if element.VR == "SQ":
            for index, item in enumerate(element.value or []):
                found.extend(_elements(item, f"{path}[{index}]."))
    return found


def plan(ds: Dataset, compiled: CompiledProfile, keyring: Keyring) -> tuple[AttributeAction, ...]:
    """Dry run: every element with the action the profile would take (``ds`` unchanged).

    Elements inside a removed sequence are not listed on their own: the sequence's
    action covers them.
    """
    result = deidentify(ds, compiled, keyring)
    changed = {action.path for action in result.actions}
    removed = [a.path for a in result.actions if a.action == "drop" and a.vr == "SQ"]
    kept = [
        AttributeAction(path, format_tag(int(e.tag)), e.keyword, e.VR, "keep", "profile")
        for path, e in _elements(ds)
        if path not in changed
        and int(e.tag) & 0xFFFF
        and not any(path.startswith(f"{seq}[") for seq in removed)
    ]
    return result.actions + tuple(kept)
