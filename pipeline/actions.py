"""Self-describing action handlers. Each changes one element and records what it did.

A handler never logs or records a value: the record holds the tag, keyword, VR,
action, the decision's source and a short note.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from pipeline import dates
from pipeline.errors import DeidError
from pipeline.keys import Keyring
from pipeline.profile.compiler import CompiledProfile, Decision, TrialSubject
from pipeline.selectors import format_tag
from pipeline.text import HeaderContext, HeaderValueTagger, PhiTagger, clean_text, scrub
from pipeline.values import store, string_values
from pipeline.vr import BYTES_VRS, DATE_VRS, DUMMY, NUMBER_VRS, TEXT_VRS, max_length

#: Tag -> (formatted tag, keyword) for :meth:`DeidContext.record` (a few hundred tags).
_TAG_FACTS: dict[int, tuple[str, str]] = {}


@dataclass(frozen=True)
class AttributeAction:
    """One action taken on one element (never its value)."""

    path: str
    tag: str
    keyword: str
    vr: str
    action: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class Pseudonym:
    """An original -> pseudonym pair, for the operator's private map file only."""

    kind: str
    original: str
    pseudonym: str


@dataclass
class DeidContext:
    """Per-dataset state shared by the handlers."""

    keyring: Keyring
    compiled: CompiledProfile
    header: HeaderContext
    tagger: PhiTagger
    header_tagger: HeaderValueTagger
    patient_key: str
    reference_date: dt.date | None
    subject: TrialSubject | None
    pseudo_id: str
    actions: list[AttributeAction] = field(default_factory=list)
    pseudonyms: dict[tuple[str, str], str] = field(default_factory=dict)
    _offset: int | None = None

    @property
    def date_offset(self) -> int:
        """Days every date of this patient moves by (keyed, deterministic)."""
        if self._offset is None:
            settings = self.compiled.profile.dates
            low, high = settings.shift_min_days, settings.shift_max_days
            assert low is not None and high is not None
            self._offset = self.keyring.offset("date-shift", self.patient_key, low, high)
        return self._offset

    def record(
        self, path: str, tag: int, vr: str, action: str, source: str, note: str = ""
    ) -> None:
        """Append one action to the result."""
        facts = _TAG_FACTS.get(tag)
        if facts is None:
            if len(_TAG_FACTS) > 65536:  # private tags are unbounded in principle
                _TAG_FACTS.clear()
            keyword = keyword_for_tag(tag) if not (tag >> 16) & 1 else ""
            facts = _TAG_FACTS[tag] = (format_tag(tag), keyword)
        self.actions.append(AttributeAction(path, facts[0], facts[1], vr, action, source, note))

    def all_pseudonyms(self) -> list[Pseudonym]:
        """Every original -> pseudonym pair of the file, the patient's own included."""
        found = [Pseudonym(kind, orig, new) for (kind, orig), new in self.pseudonyms.items()]
        if self.subject is None:
            found.append(Pseudonym("patient", self.patient_key.split("\x00")[1], self.pseudo_id))
        return found

    def remap_uid(self, uid: str) -> str:
        """Keyed UID pseudonym; registered (standard) UIDs are left as they are."""
        if not uid or uid in UID_dictionary:
            return uid
        new = self.keyring.uid(uid)
        self.pseudonyms[("uid", uid)] = new
        return new


#: Reads an element's current string values (only called when the action needs them).
Read = Callable[[], list[str]]


class Items:
    """A sequence value of ``count`` empty items (``empty``: 0, ``dummy``: 1)."""

    __slots__ = ("count",)

    def __init__(self, count: int) -> None:
        self.count = count


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The element goes (its action is recorded by the transform).
DROP = _Marker("DROP")
#: The element stays as it is.
UNCHANGED = _Marker("UNCHANGED")

#: What a transform returns: the new value (strings, a dummy number or bytes, None for
#: a zero-length value, :class:`Items` for a sequence), :data:`DROP` or :data:`UNCHANGED`.
Change = object
Transform = Callable[[Read, int, str, Decision, DeidContext, str], Change]
Handler = Callable[[Dataset, int, str, Decision, DeidContext, str], None]
TRANSFORMS: dict[str, Transform] = {}
HANDLERS: dict[str, Handler] = {}
DESCRIPTIONS: dict[str, str] = {}


def _dataset_handler(transform: Transform) -> Handler:
    """Apply ``transform`` to an element of a pydicom Dataset."""

    def apply(ds: Dataset, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> None:
        change = transform(lambda: string_values(ds, tag, vr), tag, vr, d, ctx, path)
        if change is DROP:
            del ds[tag]
        elif isinstance(change, Items):
            if change.count:
                ds.add_new(tag, vr, [Dataset() for _ in range(change.count)])
            else:
                store(ds, tag, vr, [])
        elif change is not UNCHANGED:
            store(ds, tag, vr, change)  # type: ignore[arg-type]

    return apply


def handler(name: str, description: str) -> Callable[[Transform], Transform]:
    """Register the transform of the action ``name`` with a one-line description.

    The transform works on values, so that the Dataset engine and the byte-level fast
    path (:mod:`pipeline.fastpath`) share it; ``HANDLERS[name]`` applies it to a Dataset.
    """

    def register(function: Transform) -> Transform:
        TRANSFORMS[name] = function
        HANDLERS[name] = _dataset_handler(function)
        DESCRIPTIONS[name] = description
        return function

    return register


def describe_actions() -> dict[str, str]:
    """Return every action with the description its handler declares."""
    return dict(DESCRIPTIONS)


def _fail(message: str, tag: int) -> DeidError:
    return DeidError(f"{message} at {format_tag(tag)}")


@handler("drop", "Remove the attribute (code X); a sequence goes with all its items.")
def _drop(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    ctx.record(path, tag, vr, "drop", d.source)
    return DROP


@handler("empty", "Keep the attribute with a zero-length value (code Z).")
def _empty(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    ctx.record(path, tag, vr, "empty", d.source)
    return Items(0) if vr == "SQ" else None


@handler("dummy", "Replace with a fixed, valid dummy value of the VR (code D).")
def _dummy(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    new: Change
    if vr == "SQ":
        new = Items(1)
    elif vr == "UI":
        new = [ctx.remap_uid(v) for v in read()] or ["2.25.0"]
    elif vr in DUMMY:
        new = DUMMY[vr]
    else:
        raise _fail(f"no dummy value for VR {vr}", tag)
    ctx.record(path, tag, vr, "dummy", d.source)
    return new


@handler("keep", "Keep the value; a sequence is kept and its items processed (code K).")
def _keep(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    """Keeping is done by the engine's walk; this handler only describes it."""
    return UNCHANGED


@handler("uid-remap", "Replace each UID with a keyed 2.25 UID, the same in every file (code U).")
def _uid(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    if vr != "UI":
        raise _fail(f"uid-remap needs VR UI, not {vr}", tag)
    new = [ctx.remap_uid(v) for v in read()]
    ctx.record(path, tag, vr, "uid-remap", d.source)
    return new


def _hash_one(value: str, vr: str, length: int | None, ctx: DeidContext, tag: int) -> str:
    normal = value.strip().upper()
    if vr in ("IS", "DS"):
        return ctx.keyring.digits("hash", normal, min(length or 10, 12 if vr == "IS" else 16))
    if vr in ("DA", "DT", "TM", "AS") or vr in NUMBER_VRS or vr in BYTES_VRS or vr == "SQ":
        raise _fail(f"hash is undefined for VR {vr}; use date-shift, generalize or drop", tag)
    limit = max_length(vr) or 64
    return ctx.keyring.text("hash", normal, min(length or 16, limit))


@handler("hash", "Replace with a keyed HMAC-SHA256 pseudonym fitted to the VR (same input, "
         "same output).")
def _hash(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    if vr == "UI":
        return _uid(read, tag, vr, d, ctx, path)
    length = d.rule.length if d.rule else None
    _hash_one("", vr, length, ctx, tag)  # refuses VRs that cannot be hashed, values or not
    originals = read()
    hashed = [_hash_one(v, vr, length, ctx, tag) if v.strip() else v for v in originals]
    for original, new in zip(originals, hashed, strict=True):
        ctx.pseudonyms[(f"hash:{format_tag(tag)}", original)] = new
    ctx.record(path, tag, vr, "hash", d.source)
    return hashed


@handler("replace", "Replace with a constant or a template ({pseudo_id}, {subject_id}, "
         "{site_id}, {keyword}).")
def _replace(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    assert d.rule is not None and d.rule.value is not None
    value = d.rule.value.format(
        pseudo_id=ctx.pseudo_id,
        subject_id=ctx.subject.subject_id if ctx.subject else "",
        site_id=ctx.subject.site_id if ctx.subject else "",
        keyword=keyword_for_tag(tag) or "",
    )
    limit = max_length(vr)
    if limit is not None and len(value) > limit:
        raise _fail(f"replacement is longer than VR {vr} allows ({limit})", tag)
    if vr in NUMBER_VRS or vr in BYTES_VRS or vr == "SQ":
        raise _fail(f"replace is undefined for VR {vr}", tag)
    ctx.record(path, tag, vr, "replace", d.source)
    return value


def _shift(value: str, vr: str, days: int) -> str:
    return dates.shift_da(value, days) if vr == "DA" else dates.shift_dt(value, days)


@handler("date-shift", "Move DA/DT values by the patient's keyed offset in days; "
         "intervals within a patient are kept.")
def _date_shift(
    read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str
) -> Change:
    if vr not in DATE_VRS:
        raise _fail(f"date-shift needs VR DA or DT, not {vr}", tag)
    try:
        shifted = [_shift(v, vr, ctx.date_offset) for v in read()]
    except ValueError as exc:
        raise _fail(f"unparseable {vr} value", tag) from exc
    ctx.record(path, tag, vr, "date-shift", d.source)
    return shifted


def _generalize_date(value: str, vr: str, d: Decision, ctx: DeidContext) -> str:
    rule = d.rule
    granularity = rule.granularity if rule and rule.granularity else "year"
    max_age = rule.max_age if rule else None
    if max_age is not None and ctx.reference_date is not None and value.strip():
        born = dates.parse_da(value) if vr == "DA" else dates.parse_dt_date(value)
        if dates.years_between(born, ctx.reference_date) > max_age:
            return ""
    if vr == "DA":
        return dates.da_to_granularity(value, granularity)
    return dates.dt_to_granularity(value, granularity)


@handler("generalize", "Coarsen: ages to bands with ages over max_age as max_age+1 (090Y); "
         "dates to the year or month (birth dates of people over max_age removed).")
def _generalize(
    read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str
) -> Change:
    values = read()
    try:
        if vr == "AS":
            band = d.rule.band_years if d.rule else None
            top = d.rule.max_age if d.rule else None
            new = [dates.generalize_age(v, band_years=band, max_age=top) for v in values]
        elif vr in DATE_VRS:
            new = [_generalize_date(v, vr, d, ctx) for v in values]
        else:
            raise _fail(f"generalize is undefined for VR {vr}", tag)
    except ValueError as exc:
        raise _fail(f"unparseable {vr} value", tag) from exc
    ctx.record(path, tag, vr, "generalize", d.source)
    return [v for v in new if v]


def clean_values(
    values: list[str], vr: str, ctx: DeidContext, tagger: PhiTagger
) -> tuple[int, list[str] | None]:
    """Remove PHI spans from string values: (spans found, new values or None if none)."""
    found = 0
    out: list[str] = []
    for value in values:
        if vr in TEXT_VRS:
            result = clean_text(value, ctx.header, tagger)
            found += len(result.spans)
            text = result.text
            limit = max_length(vr)
            out.append(text[:limit] if limit else text)
        else:
            spans = tagger.tag(value, ctx.header)
            found += len(spans)
            out.append("" if spans else value)
    if not found:
        return 0, None
    return found, [v for v in out if v] if vr not in TEXT_VRS else out


def clean_string(ds: Dataset, tag: int, vr: str, ctx: DeidContext, tagger: PhiTagger) -> int:
    """Remove PHI spans from a string element in place; return how many were found."""
    found, new = clean_values(string_values(ds, tag, vr), vr, ctx, tagger)
    if new is not None:
        store(ds, tag, vr, new)
    return found


@handler("clean", "Replace with values of similar meaning (code C): PHI spans in text become "
         "[NAME], [ID]...; DA/DT are date-shifted; UIDs remapped; sequences cleaned item by "
         "item; binary data (overlays, timestamps) removed.")
def _clean(read: Read, tag: int, vr: str, d: Decision, ctx: DeidContext, path: str) -> Change:
    if vr in DATE_VRS:
        return _date_shift(read, tag, vr, d, ctx, path)
    if vr == "UI":
        return _uid(read, tag, vr, d, ctx, path)
    if vr in BYTES_VRS:
        ctx.record(path, tag, vr, "drop", d.source, "binary value cannot be cleaned")
        return DROP
    if vr == "SQ" or vr in NUMBER_VRS or vr in ("TM", "AT", "DS", "IS", "FL", "FD"):
        return UNCHANGED  # sequences: the engine cleans their items; numbers carry no text
    found, new = clean_values(read(), vr, ctx, ctx.tagger)
    ctx.record(path, tag, vr, "clean", d.source, f"{found} span(s) removed")
    return UNCHANGED if new is None else new


def scrub_text(text: str, ctx: DeidContext) -> str:
    """Header-value scrub used by the residual sweep."""
    return scrub(text, ctx.header_tagger.tag(text, ctx.header))
