"""The certain PHI of one file: values of its own header, normalised for matching."""

from __future__ import annotations

import datetime
import functools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID_dictionary

from pipeline.values import string_values

logger = logging.getLogger(__name__)

#: Keywords (beyond the ID-like pattern below) whose values identify a patient or a record.
_ID_KEYWORDS = frozenset({
    "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "MedicalRecordLocator",
    "AccessionNumber", "StudyID", "AdmissionID", "IssuerOfAdmissionID", "ServiceEpisodeID",
    "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID", "RequestedProcedureID",
    "ScheduledProcedureStepID", "PerformedProcedureStepID", "SpecimenAccessionNumber",
    "SpecimenIdentifier", "ContainerIdentifier", "DeviceSerialNumber", "DeviceID", "PlateID",
    "CassetteID", "DetectorID", "GantryID", "GeneratorID", "BreedRegistrationNumber",
    "UniqueDeviceIdentifier", "DeviceAlternateIdentifier", "InsurancePlanIdentification",
    "PlacerOrderNumberImagingServiceRequest", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberProcedure", "FillerOrderNumberProcedure",
})
_ID_PATTERN = re.compile(
    r"^(?:Patient|Admission|Accession|Order|Placer|Filler|Episode|Subject|Visit|Specimen)"
    r"\w*(?:ID|IDs|Number|Numbers|Identifier)$"
)
_OTHER_PATTERN = re.compile(r"Address|Telephone|Telecom|Residence|PatientLocation|MailAddress")
_INSTITUTION_PATTERN = re.compile(r"Institution|ResponsibleOrganization")
_STRING_VRS = frozenset({"AE", "CS", "LO", "LT", "SH", "ST", "UC", "UT", "UR", "PN"})
#: Values that identify nobody (already blanked or dummy values); never used for matching.
_PLACEHOLDERS = frozenset({
    "ANONYMIZED", "ANONYMOUS", "ANON", "UNKNOWN", "NONE", "NULL", "N/A", "NA", "REMOVED",
    "DELETED", "XXX", "XXXX", "000", "0000",
})
#: Name particles: kept inside a full multi-word name, never matched alone.
NAME_PARTICLES = frozenset({
    "DE", "LA", "LE", "DA", "DI", "DO", "DU", "DEL", "DER", "DEN", "DES", "DOS", "DAS", "VAN",
    "VON", "TEN", "TER", "Y", "E", "ST", "MC", "AL", "EL", "BIN", "BEN",
})
_PN_SPLIT = re.compile(r"[\s,;]+")
_PART_SPLIT = re.compile(r"['’.\-]+")
_MAX_DEPTH = 32
#: VRs whose values the collector reads (string VRs, dates and UIDs).
COLLECTED_VRS = _STRING_VRS | {"DA", "DT", "UI"}


@dataclass(frozen=True)
class HeaderContext:
    """Values of the same file's header that are certain PHI (normalised for matching).

    Attributes
    ----------
    names
        Name parts (family, given, middle, and whole multi-word parts) of every PN
        element, uppercased, each at least 2 characters.
    ids
        Patient, record, accession, study, procedure and device identifiers and
        instance UIDs, uppercased, each at least 3 characters.
    dates
        Every DA / DT date of the header (birth date included).
    institutions
        Institution names, addresses and departments, uppercased.
    other
        Addresses, telephone numbers, e-mail and other identifying strings, uppercased,
        each at least 3 characters.
    """

    names: frozenset[str] = field(default_factory=frozenset)
    ids: frozenset[str] = field(default_factory=frozenset)
    dates: frozenset[datetime.date] = field(default_factory=frozenset)
    institutions: frozenset[str] = field(default_factory=frozenset)
    other: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_dataset(cls, ds: Dataset, *, include_institution: bool = True) -> HeaderContext:
        """Collect the PHI values of ``ds``, walking nested sequences.

        Parameters
        ----------
        ds
            The dataset (not modified).
        include_institution
            When False, institution values are not collected (the "Retain
            Institution Identity" option).

        Returns
        -------
        HeaderContext
            Unreadable elements and unparseable dates are skipped silently.
        """
        acc = HeaderCollector(include_institution)
        acc.walk(ds, "", 0)
        return acc.context()

    def merge(self, other: HeaderContext) -> HeaderContext:
        """Return the union of this context and ``other``."""
        return HeaderContext(
            names=self.names | other.names,
            ids=self.ids | other.ids,
            dates=self.dates | other.dates,
            institutions=self.institutions | other.institutions,
            other=self.other | other.other,
        )

    @property
    def empty(self) -> bool:
        """True when the context holds no value at all."""
        return not (self.names or self.ids or self.dates or self.institutions or self.other)


def name_parts(value: str) -> set[str]:
    """Split one person name (DICOM PN or free form) into matchable parts.

    Family, given and middle components of every component group are kept;
    prefixes and suffixes (``Dr``, ``MD``) are not. Multi-word components are kept
    whole and also split into words; particles (``van``, ``de``) are only kept
    inside the whole component.
    """
    parts: set[str] = set()
    for group in value.split("="):
        for component in group.split("^")[:3]:
            words = [w for w in _PN_SPLIT.split(component.strip().upper()) if w]
            if len(words) > 1:
                parts.add(" ".join(words))
            for word in words:
                pieces = [p for p in _PART_SPLIT.split(word) if p]
                candidates = [word.strip(".'’-"), *pieces] if len(pieces) > 1 else pieces
                for piece in candidates:
                    if len(piece) < 2 or piece in _PLACEHOLDERS:
                        continue
                    if piece in NAME_PARTICLES and (len(words) > 1 or len(pieces) > 1):
                        continue
                    parts.add(piece)
    return parts


def parse_header_date(value: str) -> datetime.date | None:
    """Return the date at the start of a DA or DT value, or None if it has none."""
    digits = value.strip().replace(".", "")[:8]
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return datetime.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


class HeaderCollector:
    """Accumulates certain-PHI values; the engine feeds it during its own walk."""

    def context(self) -> HeaderContext:
        """Return what was collected as a HeaderContext."""
        return HeaderContext(
            names=frozenset(self.names),
            ids=frozenset(self.ids),
            dates=frozenset(self.dates),
            institutions=frozenset(self.institutions),
            other=frozenset(self.other),
        )

    def __init__(self, include_institution: bool) -> None:
        self.include_institution = include_institution
        self.names: set[str] = set()
        self.ids: set[str] = set()
        self.dates: set[datetime.date] = set()
        self.institutions: set[str] = set()
        self.other: set[str] = set()

    def walk(self, ds: Dataset, parent: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        for tag in list(ds.keys()):
            try:
                raw_vr = getattr(ds.get_item(tag), "VR", None)
                keyword = keyword_for_tag(tag) or ""
                if raw_vr and not relevant(keyword, str(raw_vr), parent):
                    continue  # not converting irrelevant elements keeps this pass cheap
                if raw_vr in _STRING_VRS or raw_vr in ("DA", "DT", "UI"):
                    self.add(keyword, parent, str(raw_vr), string_values(ds, tag, str(raw_vr)))
                    continue
                elem = ds[tag]
                vr = elem.VR
                keyword = elem.keyword or ""
                if vr == "SQ":
                    for item in elem.value or ():
                        self.walk(item, keyword or parent, depth + 1)
                    continue
                if elem.value is None or vr not in _STRING_VRS | {"DA", "DT", "UI"}:
                    continue
                self.add(keyword, parent, vr, list(_values(elem.value)))
            except Exception:  # a broken element must not stop the walk
                logger.debug("skipped one unreadable element while collecting context")

    def add(self, keyword: str, parent: str, vr: str, values: list[str]) -> None:
        for value in values:
            text = value.strip()
            upper = text.upper()
            if not text or upper in _PLACEHOLDERS:
                continue
            if vr == "PN":
                self.names |= name_parts(text)
            elif vr in ("DA", "DT"):
                for piece in text.split("-"):
                    day = parse_header_date(piece)
                    if day is not None:
                        self.dates.add(day)
            elif vr == "UI":
                if len(text) >= 10 and text not in UID_dictionary:
                    self.ids.add(upper)
            elif keyword in _ID_KEYWORDS or _ID_PATTERN.match(keyword):
                if "Telephone" in keyword or "Phone" in keyword:
                    self.other.add(upper)
                elif len(upper) >= 3:
                    self.ids.add(upper)
            elif _INSTITUTION_PATTERN.search(keyword) or (
                keyword == "CodeMeaning" and _INSTITUTION_PATTERN.search(parent)
            ):
                if self.include_institution and len(upper) >= 3:
                    self.institutions.add(" ".join(upper.split()))
            elif _OTHER_PATTERN.search(keyword) and len(upper) >= 3:
                self.other.add(" ".join(upper.split()))


@functools.lru_cache(maxsize=4096)
def relevant(keyword: str, vr: str, parent: str) -> bool:
    """Whether an element can contribute to the context (same tests as ``add``)."""
    if vr in ("SQ", "PN", "DA", "DT", "UI"):
        return True
    if vr not in _STRING_VRS:
        return False
    return bool(
        keyword in _ID_KEYWORDS
        or _ID_PATTERN.match(keyword)
        or _INSTITUTION_PATTERN.search(keyword)
        or (keyword == "CodeMeaning" and _INSTITUTION_PATTERN.search(parent))
        or _OTHER_PATTERN.search(keyword)
        or not keyword  # private or unknown: look at it
    )


def _values(value: object) -> Iterator[str]:
    """Yield the string values of an element value (single or multi-valued)."""
    items: Iterable[object] = value if isinstance(value, MultiValue | list | tuple) else (value,)
    for item in items:
        if item is None or isinstance(item, bytes):
            continue
        yield from str(item).split("\\")
