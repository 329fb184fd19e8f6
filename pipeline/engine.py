"""De-identify one pydicom Dataset with a compiled profile. Pure: no file or network I/O."""

from __future__ import annotations

import copy
import datetime as dt
import functools
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline import __version__, dates
from pipeline.actions import (
    AttributeAction,
    DeidContext,
    Pseudonym,
    describe_actions,
)
from pipeline.errors import DeidError
from pipeline.keys import Keyring
from pipeline.profile.compiler import CompiledProfile
from pipeline.selectors import format_tag
from pipeline.text import (
    HeaderContext,
    HeaderValueTagger,
)
from pipeline.text.tagger import tagger_for

if TYPE_CHECKING:
    from pipeline.engine_reference import ReferenceWalker
    from pipeline.pixel.stage import PixelEngines, PixelOutcome
    from pipeline.pixel.types import PixelFinding

from pipeline.walker import Walker, _tag_text

__all__ = ["AttributeAction", "DeidResult", "Pseudonym", "deidentify", "describe_actions", "plan"]


#: Root of Veil's implementation UID (a 2.25 UID derived from the project's name).
IMPLEMENTATION_UID = "2.25." + str(int.from_bytes(hashlib.sha256(b"veil").digest()[:16], "big"))
#: Implementation Version Name of every file Veil writes (SH: 16 characters at most).
IMPLEMENTATION_VERSION = f"VEIL_{__version__}"[:16]
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
    """A de-identified dataset and everything done to it.

    Results of the byte-level fast path (:mod:`pipeline.fastpath`) carry the encoded
    file in ``encoded`` and parse ``dataset`` from it only when someone asks.
    """

    parsed: Dataset | None
    actions: tuple[AttributeAction, ...]
    warnings: tuple[str, ...]
    pseudonyms: tuple[Pseudonym, ...]
    study_uid: str
    series_uid: str
    sop_uid: str
    pixel_findings: tuple[PixelFinding, ...] = ()
    requires_review: bool = False
    encoded: bytes | None = None

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The de-identified dataset (parsed from ``encoded`` on first use)."""
        if self.parsed is not None:
            return self.parsed
        if self.encoded is None:
            raise DeidError("result holds neither a dataset nor its encoding")
        return dcmread(io.BytesIO(self.encoded))


#: Reads a top-level attribute as the text ``str(ds.get(keyword, "") or "")`` gives.
Get = Callable[[str], str]


def _getter(ds: Dataset) -> Get:
    return lambda keyword: str(ds.get(keyword, "") or "")


def _patient_key(get: Get) -> tuple[str, str]:
    patient_id = get("PatientID").strip()
    if patient_id:
        issuer = get("IssuerOfPatientID").strip()
        return f"id\x00{patient_id}\x00{issuer}", ""
    name = get("PatientName").strip().upper()
    birth = get("PatientBirthDate").strip()
    if name:
        return f"name\x00{name}\x00{birth}", "patient key from name and birth date"
    study = get("StudyInstanceUID")
    return f"study\x00{study}", "no patient identity: pseudonyms and date shift keyed by study"


def _reference_date(get: Get) -> dt.date | None:
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        value = get(keyword)
        if value.strip():
            try:
                return dates.parse_da(value)
            except ValueError:
                continue
    return None


def context_for(get: Get, compiled: CompiledProfile, keyring: Keyring) -> tuple[DeidContext, str]:
    """The per-file context of the handlers, and a note on how the patient was keyed."""
    patient_key, note = _patient_key(get)
    subject = None
    if compiled.trial is not None:
        patient_id = get("PatientID").strip()
        subject = compiled.trial.get(patient_id)
        if subject is None:
            raise DeidError("patient is not listed in the trial mapping; not de-identified")
    ctx = DeidContext(
        keyring=keyring,
        compiled=compiled,
        header=HeaderContext(),
        tagger=tagger_for(compiled.profile.text),
        header_tagger=HeaderValueTagger(),
        patient_key=patient_key,
        reference_date=_reference_date(get),
        subject=subject,
        pseudo_id=keyring.text("patient-id", patient_key, 16),
    )
    return ctx, note


def _has_pixels(ds: Dataset) -> bool:
    return "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds


def warnings_for(get: Get, has_pixels: bool, cleans_pixels: bool) -> list[str]:
    """The file-level warnings of a result (burned-in text risk, no pixel data)."""
    warnings: list[str] = []
    if cleans_pixels:
        return warnings  # the pixel stage scans every frame; its findings say what it did
    if has_pixels:
        burned = get("BurnedInAnnotation").upper() == "YES"
        modality = get("Modality").upper()
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
    outcome = clean_pixels(ds, settings, ctx.header, engines or engines_for(settings),
                           tagger=ctx.tagger)
    counts = {status: sum(f.status == status for f in outcome.findings)
              for status in ("cleared", "pending-review", "rejected")}
    note = ", ".join(f"{n} {status}" for status, n in counts.items())
    ctx.record("(7FE0,0010)", 0x7FE00010, "OB", "clean-pixels", "option:clean-pixel-data",
               f"{outcome.views_scanned} view(s) scanned; {note}")
    return outcome


#: id(compiled) -> (compiled, DeidentificationMethod values): the profile hash is a JSON
#: dump of the whole profile, too slow to recompute for every file.
_METHODS: dict[int, tuple[CompiledProfile, tuple[str, str]]] = {}


def method_values(compiled: CompiledProfile) -> list[str]:
    """Values of DeidentificationMethod for ``compiled`` (cached per compiled profile)."""
    cached = _METHODS.get(id(compiled))
    if cached is None or cached[0] is not compiled:
        if len(_METHODS) > 64:
            _METHODS.clear()
        values = (
            f"Veil {__version__}"[:64],
            f"profile {compiled.name} sha256:{compiled.content_hash[:16]}"[:64],
        )
        cached = _METHODS[id(compiled)] = (compiled, values)
    return list(cached[1])


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
    if getattr(ds, "preamble", None) is not None:
        ds.preamble = bytes(128)  # a preamble may hold anything (TIFF headers, names)
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = method_values(compiled)
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
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION


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
    return _deidentify(ds, compiled, keyring, in_place, pixel_engines, Walker)


def _deidentify(
    ds: Dataset,
    compiled: CompiledProfile,
    keyring: Keyring,
    in_place: bool,
    pixel_engines: PixelEngines | None,
    walker_class: type[Walker] | type[ReferenceWalker],
) -> DeidResult:
    """:func:`deidentify` with a given element walker (the reference one in tests)."""
    if not in_place:
        ds = copy.deepcopy(ds)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "") or "").strip():
            raise DeidError(f"missing {keyword}")
    get = _getter(ds)
    ctx, note = context_for(get, compiled, keyring)
    has_pixels = _has_pixels(ds)
    cleans_pixels = "clean-pixel-data" in compiled.options and has_pixels
    warnings = warnings_for(get, has_pixels, cleans_pixels)
    if note:
        warnings.append(note)
    retain_institution = "retain-institution-identity" in compiled.options
    walker = walker_class(ctx, compiled.profile.residual_sweep, not retain_institution)
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
    return DeidResult(
        parsed=ds,
        actions=tuple(ctx.actions),
        warnings=tuple(warnings),
        pseudonyms=tuple(ctx.all_pseudonyms()),
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
