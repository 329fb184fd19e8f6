"""Deciding which OCR'd text boxes hold PHI (the pixel-PHI classifier).

Each recognised string is tagged by the free-text taggers (:func:`default_tagger` unless
one is injected) on the text itself and, the rule taggers only, on a few OCR-noise
variants (:func:`ocr_variants`; a model is trained on OCR noise and reads the text as
recognised: given digits read as letters it takes scan parameters for names, ``DR60``
as ``DRGO``), and is matched against the file's own header values by an OCR-tolerant
matcher:

* both sides are folded through the same confusable classes (``0/O``, ``1/I/L/|``,
  ``5/S``, ``8/B``, ``2/Z``, ``6/G``), upper-cased and *squashed* (every
  non-alphanumeric dropped), so ``^`` read as ``~``/``-``, merged or dropped spaces and
  case do not matter;
* a header value is found when it is a substring of the squashed text: name parts of at
  least 3 characters, IDs of at least 4 (with and without leading zeros), the
  distinctive words of institutions and other values, and every header date rendered in
  common formats (``YYYYMMDD``, ``DD/MM/YYYY``, ``MM/DD/YYYY``, ``DD.MM.YYYY``,
  ``YYYY-MM-DD``, ``DD-Mon-YYYY``, ``Mon DD YYYY``, padded or not, 2-digit years);
* ``^`` read as ``A`` needs nothing special: ``DOEAJOHN`` contains ``DOE`` and ``JOHN``;
* a header date cut short is still that date: a detector box that misses the start or
  the end of a line (faint glyphs over a brighter background) reads ``17/2018`` or
  ``07.08.195``; a prefix or suffix of a rendered date of at least
  ``PARTIAL_DATE_CHARS`` characters, ``PARTIAL_DATE_DIGITS`` of them digits, is a match;
* a header ID cut short is still that ID: a prefix or suffix of at least
  ``PARTIAL_ID_CHARS`` characters, ``PARTIAL_ID_DIGITS`` of them digits (``PIDB8031``
  for ``B8031078``), or of ``LABELLED_ID_CHARS`` right after an ID label
  (``Accession:E269``);
* a value read with errors is found within edits (Levenshtein, :func:`near_edits`: one
  from ``NEAR_CHARS`` characters, two from twice that): name parts and distinctive
  institution and address words, and an institution or address line cut short (the
  text a stretch of the value holding ``NEAR_OWN`` characters of distinctive words);
  and two header name parts read with more errors, each in a word of its own
  (:func:`_name_pair`: ``Patient Gaett Kriht`` for ``GARRETT KNIGHT``, 8 px): either
  word alone is too far from its name to be taken for it, the two together are not
  chance.

Confidence is a match factor times the recogniser score: 0.99 for a header value found
verbatim (tagger on the raw text, or squashed without confusable folding), 0.9 when only
confusable folding or a variant finds it, or for a date cut short, 0.6 for a lone name
part buried inside a longer token or a value found only within edits, the tagger's own
confidence for pattern and dictionary spans, 0.5 for the safety rule below.

Choices (safety first, a leaked name is worse than a redacted ruler):

* any run of 5+ digits in the recognised text is a finding (``ID``) in "phi-only" mode
  (runs that appear only after confusable folding go through the taggers and the
  overlay veto instead, so ``W400L40`` stays an overlay);
* any header match is a finding, whatever else the box holds; substring matching
  over-flags a little (a header name ``ANN`` flags ``ANNOTATION``) except that a lone
  name part strictly inside one clinical-vocabulary word is ignored;
* a box made only of overlay tokens (orientation letters, scale and acquisition markers
  such as ``5 cm``, ``W 400 L 40``, ``kV 120``, ``1/2``, ``SE 3``, short numbers, and
  clinical vocabulary that is not also a person name) is not a finding unless it matches
  the header or follows a patient label (below); this veto never applies to a 5+ digit
  run;
* ``FAMILYAGIVEN`` with names the header does not hold is split at each inner ``A`` and
  flagged when both halves are dictionary names that are not clinical words;
* a birth-date label (``DOB``, ``D.O.B.``, ``Birth``, ``Born``) followed by a value with
  at least ``PARTIAL_DATE_DIGITS`` digits is a date however the value reads
  (``DOB 2±.08.1985``: a 7 px ``4`` read as ``±`` and ``6`` as ``8``); likewise a
  patient-name label (``Pt:``, ``Patient Name:``, ``Name:`` at the start of a line)
  followed by ``LABEL_NAME_LETTERS`` letters is a name, and an ID label (``MRN``,
  ``PID``, ``ID``, ``Acc#``, ``Accession No``) followed by ``LABEL_ID_DIGITS`` digits an
  ID (``Pt: Saah Gaci``: ``SARAH GARCIA`` at 7 px with three letters lost).

One :class:`Finding` is returned per flagged box, with the most confident entity among
those allowed by ``entities``. In "all-text" mode a box with no PHI is ``OTHER``; with
``entities`` given, a box is kept only when one of its entities (``OTHER`` for a box with
no PHI) is allowed. Recognised text is never logged, raised or shown in a
``repr``.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from pipeline.pixel.types import Recognition, TextBox
from pipeline.text import CompositeTagger, HeaderContext, PhiTagger, default_tagger
from pipeline.text.header import ADDRESS_WORDS, INSTITUTION_WORDS
from pipeline.text.institutions import InstitutionTagger
from pipeline.text.spans import fold
from pipeline.text.vocabulary import clinical_vocabulary, name_dictionary

Mode = Literal["all-text", "phi-only", "none"]

_EXACT, _FOLDED, _PARTIAL, _SAFETY = 0.99, 0.9, 0.6, 0.5
#: A header date cut short (see the module notes): at least this many characters of one
#: rendering, squashed, and this many digits among them.
PARTIAL_DATE_CHARS, PARTIAL_DATE_DIGITS = 6, 4
#: Header values matched within edits (see the module notes): the least key length, and
#: the least number of characters of distinctive words in a stretch of a value cut short.
NEAR_CHARS, NEAR_OWN = 6, 2
#: A header ID cut short (see the module notes): at least this many characters of it,
#: squashed, and this many digits among them; after an ID label, fewer suffice.
PARTIAL_ID_CHARS, PARTIAL_ID_DIGITS = 5, 4
LABELLED_ID_CHARS, LABELLED_ID_DIGITS = 4, 3
#: A full name read with errors (see the module notes): two words of at least
#: ``PAIR_LETTERS`` characters, each within a third of its length in edits (one at
#: least, ``PAIR_EDITS`` at most) of a different header name part as long.
PAIR_LETTERS, PAIR_EDITS = 4, 2
#: Confusable characters mapped to one representative (applied after upper-casing).
_CONFUSABLE = str.maketrans({"0": "O", "1": "I", "L": "I", "|": "I", "!": "I", "5": "S",
                             "8": "B", "2": "Z", "6": "G"})
_TO_DIGIT = str.maketrans({"O": "0", "I": "1", "L": "1", "|": "1",
                           "S": "5", "B": "8", "Z": "2", "G": "6"})
_TO_LETTER = str.maketrans({"0": "O", "1": "I", "5": "S", "8": "B", "2": "Z", "6": "G",
                            "|": "I"})
_MIXED = re.compile(r"[A-Za-z0-9|]*\d[A-Za-z0-9|]*")
_DIGIT_RUN = re.compile(r"\d{5,}")
_INNER_A = re.compile(r"(?<=[A-Z])A(?=[A-Z])")
_CARET_LIKE = re.compile(r"(?<=[^\W\d_])~(?=[^\W\d_])")
#: A DICOM UID (digits and dots): not an ID whose pieces identify anyone.
_UID_SHAPE = re.compile(r"[0-9]+(?:\.[0-9]+)+")
#: A separator between digits with spaces read around it (``22.08. 1885``).
_SPACED_SEPARATOR = re.compile(r"(?<=\d)\s*([./-])\s*(?=\d)")
#: A patient label glued to the letters before it (``AXIALMRN``): labels that occur
#: inside no word, upper case as drawn.
_GLUED_LABEL = re.compile(r"(?<=[A-Za-z])(?=(?:MRN|DOB)(?![a-z]))")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_FULL_MONTHS = ("JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST",
                "SEPTEMBER", "OCTOBER", "NOVEMBER", "DECEMBER")
#: Overlay tokens that identify nobody (orientation, scale, window, acquisition, series).
_OVERLAY_WORDS = frozenset({
    "L", "R", "A", "P", "H", "F", "S", "I", "AP", "PA", "LR", "RL", "SI", "IS", "LAT", "LAO",
    "RAO", "LPO", "RPO", "AX", "AXIAL", "SAG", "COR", "TRA", "W", "C", "WW", "WL", "WC", "SE",
    "IM", "IMA", "IMG", "SER", "SL", "ST", "THK", "TR", "TE", "TI", "FA", "ET", "FOV", "DFOV",
    "KV", "KVP", "MA", "MAS", "MS", "CM", "MM", "HU", "NEX", "ZOOM", "TILT", "ROT", "SCAN",
    "NO", "OF", "B", "X", "Z", "SP", "ACQ", "CTDI", "DLP", "MGY", "FR", "HZ", "MHZ",
})
_OVERLAY_TOKEN = re.compile(
    r"[-+]?\d{1,4}(?:[.,]\d+)?(?:MM|CM|M|MS|S|KV|KVP|MA|MAS|HU|X|%|DEG|HZ|MHZ|T|MGY)?"
    r"|\d{1,3}/\d{1,3}|(?:[A-Z]{1,4}[:=]?[-+]?\d{1,4}(?:[.,]\d+)?)+"
)
_TOKEN_SPLIT = re.compile(r"[\s,;:=()\[\]]+")
_BIRTH_LABEL = re.compile(r"(?<![A-Z])(?:D\.?\s?O\.?\s?B\.?|BIRTH(?:\s?DATE)?|BORN)(?![A-Z])"
                          r"\s*[:#=.-]?\s*(?P<value>\S.*)", re.IGNORECASE)
#: A patient's or referring physician's name label and its separator (``Pt:``, ``Patient
#: Name:``, ``Ref:``, ``Referring:``; ``Name:`` only at the start of a line, where no
#: other word names what it is: ``Protocol Name:``, and also with its first letter lost,
#: as 7 px text at a crop's edge reads: ``ame: /ma Pode``).
_NAME_LABEL = re.compile(r"(?:(?<![A-Z])(?:PATIENT|PT|PAT)(?:\s?NAME)?|^\s*N?AME"
                         r"|(?<![A-Z])REF(?:ERRING)?(?:\.?\s?PHYS(?:ICIAN)?\.?)?)\s*[:;#]"
                         r"(?P<value>.*)", re.IGNORECASE)
#: A patient ID or accession label (``MRN``, ``PID``, ``ID:``, ``Acc#``, ``Accession No``).
_ID_LABEL = re.compile(r"(?<![A-Z])(?:MRN|PID|(?:PATIENT\s?)?ID|ACC(?:ESSION)?(?:\s?(?:NO|NUM"
                       r"(?:BER)?)\b)?)(?![A-Z])\s*[:;#=.-]?\s*(?P<value>\S.*)", re.IGNORECASE)
#: Least letters after a name label, and digits (letters read for digits count) after an
#: ID label, for the value to be PHI however it reads.
LABEL_NAME_LETTERS, LABEL_ID_DIGITS = 2, 4


@dataclass(frozen=True)
class Finding:
    """A text box that holds PHI (or any text, in "all-text" mode).

    Attributes
    ----------
    box : TextBox
        The region to redact.
    entity : str
        The PHI entity (``NAME``, ``ID``, ``DATE``...; ``OTHER`` for unclassified text).
    confidence : float
        Match factor times the recogniser score, in [0, 1].
    source : str
        ``"header"``, ``"pattern"``, ``"dictionary"`` or ``"all-text"``; never the text.
    """

    box: TextBox
    entity: str
    confidence: float
    source: str


@dataclass(frozen=True)
class _Hit:
    entity: str
    factor: float
    source: str


def decide(
    boxes: Sequence[TextBox], texts: Sequence[Recognition], context: HeaderContext, *,
    mode: Mode = "phi-only", entities: frozenset[str] | None = None,
    tagger: PhiTagger | None = None,
) -> list[Finding]:
    """Return the boxes to redact, in input order.

    Parameters
    ----------
    boxes, texts
        The detected boxes and their recognitions (same length, same order).
    context
        The header PHI of the same file.
    mode
        ``"all-text"`` (every box with text), ``"phi-only"`` (boxes whose text holds
        PHI) or ``"none"``.
    entities
        When given, only findings of these entity types are kept.
    tagger
        The free-text tagger; :func:`default_tagger` when None.

    Returns
    -------
    list of Finding
        At most one per box.
    """
    if len(boxes) != len(texts):
        raise ValueError(f"{len(boxes)} boxes but {len(texts)} recognitions")
    if mode not in ("all-text", "phi-only", "none"):
        raise ValueError("mode must be 'all-text', 'phi-only' or 'none'")
    if mode == "none":
        return []
    active = tagger if tagger is not None else default_tagger()
    rules = _rules_of(active)
    out: list[Finding] = []
    for box, rec in zip(boxes, texts, strict=True):
        if not rec.text.strip():
            continue
        every = _hits(rec.text, context, active, rules)
        hits = [h for h in every if entities is None or h.entity in entities]
        # a match of the file's own header is certain: it names the entity when present
        best = max(hits, key=lambda h: (h.source == "header", h.factor), default=None)
        score = max(0.0, min(1.0, rec.score))
        if mode == "all-text":
            if best is None and every:
                continue  # PHI of an entity type the profile does not redact
            entity = best.entity if best is not None else "OTHER"
            if entities is None or entity in entities:
                out.append(Finding(box, entity, score, "all-text"))
        elif best is not None:
            out.append(Finding(box, best.entity, min(1.0, best.factor * score), best.source))
    return out


def ocr_variants(text: str) -> list[str]:
    """Return ``text`` and its OCR-noise variants that the taggers are run on.

    The text itself; ``~`` between letters read back as ``^``; every token that holds a
    digit with its confusable letters read as digits (``1234S678`` -> ``12345678``);
    the same tokens with their confusable digits read as letters (``D0E`` -> ``DOE``);
    spaces read around a separator between digits dropped (``22.08. 1885`` ->
    ``22.08.1885``); and a patient label run into the word before it set apart
    (``AXIALMRN:1431`` -> ``AXIAL MRN:1431``: two boxes read as one, the space lost).
    Duplicates are dropped; the original comes first.
    """
    upper_mixed = _MIXED.sub(lambda m: m.group(0).upper(), text)
    candidates = [
        text,
        _CARET_LIKE.sub("^", text),
        _MIXED.sub(lambda m: m.group(0).upper().translate(_TO_DIGIT), upper_mixed),
        _MIXED.sub(lambda m: m.group(0).translate(_TO_LETTER), text),
        _SPACED_SEPARATOR.sub(r"\1", text),
        _GLUED_LABEL.sub(" ", text),
    ]
    return list(dict.fromkeys(candidates))


#: Institution names by shape: in pixels an institution often has no header counterpart.
_INSTITUTIONS = InstitutionTagger()


def _hits(text: str, context: HeaderContext, tagger: PhiTagger,
          rules: PhiTagger) -> list[_Hit]:
    """Every reason to flag ``text``: ``tagger`` reads it as recognised, ``rules`` (its
    rule taggers, :func:`_rules_of`) its OCR variants; header hits survive the overlay
    veto."""
    header = list(_header_hits(text, context))
    other: list[_Hit] = []
    joined = _SPACED_SEPARATOR.sub(r"\1", text)
    spaced_date = False  # "22.08. 1885": a date once the spaces are dropped
    for i, variant in enumerate(ocr_variants(text)):
        reader = tagger if i == 0 else rules
        for span in (*reader.tag(variant, context), *_INSTITUTIONS.tag(variant, context)):
            spaced_date |= variant == joined != text and span.entity == "DATE"
            if span.source == "header":
                header.append(_Hit(span.entity, _EXACT if i == 0 else _FOLDED, "header"))
            else:
                factor = span.confidence * (1.0 if i == 0 else _FOLDED)
                other.append(_Hit(span.entity, factor, span.source))
    if _birth_date(text):
        other.append(_Hit("DATE", _FOLDED, "pattern"))
    labelled = [_Hit(entity, _FOLDED, "pattern") for entity in _labelled(text)]
    other.extend(labelled)
    if _DIGIT_RUN.search(text):
        return [*header, *other, _Hit("ID", _SAFETY, "pattern")]
    if _caret_split_name(text):
        other.append(_Hit("NAME", 0.7, "dictionary"))
    if header or labelled or spaced_date or not _only_overlay(text):
        return header + other
    return []


def _rules_of(tagger: PhiTagger) -> PhiTagger:
    """``tagger`` without the models among its members (those that name a model they
    run, :func:`pipeline.registry.engine_refs`): what reads the OCR variants."""
    from pipeline.registry import engine_refs

    members = getattr(tagger, "taggers", None)
    if members is None:
        return CompositeTagger([]) if engine_refs(tagger) else tagger
    rules = [member for member in members if not engine_refs(member)]
    return tagger if len(rules) == len(members) else CompositeTagger(rules)


def _squash(text: str) -> str:
    """Upper-cased letters and digits only (accents stripped)."""
    return "".join(ch for ch in fold(text).upper() if ch.isalnum())


def _fold_squash(text: str) -> str:
    """:func:`_squash` with every confusable character replaced by its representative."""
    return "".join(ch for ch in fold(text).upper().translate(_CONFUSABLE) if ch.isalnum())


@dataclass(frozen=True)
class _Keys:
    """Squashed header values of one context: (plain key, folded key, entity)."""

    names: tuple[tuple[str, str], ...]
    values: tuple[tuple[str, str, str], ...]
    date_pieces: tuple[tuple[str, str], ...] = ()
    #: Folded keys matched within edits: (key, entity).
    near: tuple[tuple[str, str], ...] = ()
    #: Whole folded institution and address values, with the positions of their
    #: distinctive characters, for lines cut short: (key, positions, entity).
    wholes: tuple[tuple[str, frozenset[int], str], ...] = ()
    #: Folded header IDs (not UIDs), and the pieces a cut line leaves of them:
    #: (folded piece, whether it is enough without a label) (:func:`_id_piece`).
    id_keys: tuple[str, ...] = ()
    id_pieces: tuple[tuple[str, bool], ...] = ()


@functools.lru_cache(maxsize=256)
def _keys(context: HeaderContext) -> _Keys:
    names = {(_squash(n), _fold_squash(n)) for n in context.names if len(_squash(n)) >= 3}
    values: set[tuple[str, str, str]] = set()
    for value in context.ids:
        squashed = _squash(value)
        for key in (squashed, squashed.lstrip("0")):
            if len(key) >= 4:
                values.add((key, _fold_squash(key), "ID"))
    wholes: set[tuple[str, frozenset[int], str]] = set()
    for group, generic, entity in ((context.institutions, INSTITUTION_WORDS, "INSTITUTION"),
                                   (context.other, ADDRESS_WORDS, "LOCATION")):
        for value in group:
            words = re.findall(r"[^\W_]+", fold(value).upper())
            keys = [w for w in words if len(w) >= 4 and w not in generic]
            if any(w not in generic for w in words):
                keys.append(_squash(value))
            values.update((k, _fold_squash(k), entity) for k in keys if len(k) >= 4)
            whole, own = "", set[int]()  # the folded value, its distinctive positions
            for word in words:
                folded = _fold_squash(word)
                if word not in generic:
                    own.update(range(len(whole), len(whole) + len(folded)))
                whole += folded
            if len(own) >= NEAR_OWN and len(whole) > NEAR_CHARS:
                wholes.add((whole, frozenset(own), entity))
    near = {(fkey, entity) for _k, fkey, entity in values
            if entity in ("INSTITUTION", "LOCATION") and len(fkey) >= NEAR_CHARS}
    near.update((fkey, "NAME") for _k, fkey in names if len(fkey) >= NEAR_CHARS)
    pieces: set[tuple[str, str]] = set()
    for day in context.dates:
        forms = _date_forms(day)
        values.update((k, _fold_squash(k), "DATE") for k in forms)
        pieces.update((p, _fold_squash(p)) for k in forms for p in _cut_short(k))
    id_keys, id_pieces = _id_pieces(context.ids)
    return _Keys(tuple(sorted(names)), tuple(sorted(values)), tuple(sorted(pieces)),
                 tuple(sorted(near)), tuple(sorted(wholes, key=lambda w: w[0])), id_keys,
                 id_pieces)


def _id_pieces(ids: frozenset[str]) -> tuple[tuple[str, ...], tuple[tuple[str, bool], ...]]:
    """Folded header IDs and their prefixes and suffixes (see :func:`_id_piece`). UIDs
    are left out: their prefixes are an organisation's root, shared by every study."""
    keys: set[str] = set()
    pieces: dict[str, bool] = {}
    for value in ids:
        if _UID_SHAPE.fullmatch(value):
            continue
        key = _squash(value)
        keys.add(_fold_squash(key))
        for cut in _cut_short(key, LABELLED_ID_CHARS, LABELLED_ID_DIGITS):
            alone = len(cut) >= PARTIAL_ID_CHARS and _digits(cut) >= PARTIAL_ID_DIGITS
            piece = _fold_squash(cut)
            pieces[piece] = pieces.get(piece, False) or alone
    return tuple(sorted(keys)), tuple(sorted(pieces.items()))


def near_edits(length: int) -> int:
    """Edits allowed between a header key of ``length`` characters and the text: one
    from ``NEAR_CHARS``, two from twice that."""
    return 0 if length < NEAR_CHARS else 1 if length < 2 * NEAR_CHARS else 2


def _close_stretches(needle: str, hay: str, edits: int) -> Iterator[tuple[int, int]]:
    """(start, size) of each stretch of ``hay`` within ``edits`` edits (Levenshtein) of
    ``needle``, sizes from ``len(needle) - edits`` to ``len(needle) + edits``."""
    from rapidfuzz.distance import Levenshtein

    for size in range(max(1, len(needle) - edits), len(needle) + edits + 1):
        for start in range(0, len(hay) - size + 1):
            if Levenshtein.distance(needle, hay[start:start + size],
                                    score_cutoff=edits) <= edits:
                yield start, size


def _near(key: str, text: str, edits: int) -> bool:
    """Whether a stretch of ``text`` is within ``edits`` edits of ``key``."""
    return any(True for _ in _close_stretches(key, text, edits))


def _piece_of(text: str, whole: str, own: frozenset[int]) -> bool:
    """Whether ``text`` is, within :func:`near_edits` of its length, a stretch of
    ``whole`` holding at least ``NEAR_OWN`` of its distinctive characters (``own``): a
    line cut short."""
    if not NEAR_CHARS < len(text) < len(whole):
        return False
    return any(len(own.intersection(range(start, start + size))) >= NEAR_OWN
               for start, size in _close_stretches(text, whole, near_edits(len(text))))


def _cut_short(form: str, chars: int = PARTIAL_DATE_CHARS,
               digits: int = PARTIAL_DATE_DIGITS) -> set[str]:
    """The prefixes and suffixes of a squashed value (a date rendering by default) that a
    cut line may leave: shorter than the whole, at least ``chars`` long, with at least
    ``digits`` digits."""
    cuts = {form[:k] for k in range(chars, len(form))}
    cuts |= {form[-k:] for k in range(chars, len(form))}
    return {c for c in cuts if _digits(c) >= digits}


def _digits(text: str) -> int:
    """Number of digits in ``text``."""
    return sum(ch.isdigit() for ch in text)


def _date_forms(day: datetime.date) -> set[str]:
    """Squashed renderings of one date (separators are dropped by squashing anyway)."""
    y, yy = f"{day.year:04d}", f"{day.year % 100:02d}"
    forms: set[str] = set()
    for d in {f"{day.day:02d}", str(day.day)}:
        for m in {f"{day.month:02d}", str(day.month)}:
            forms.update({y + m + d, d + m + y, m + d + y, d + m + yy, m + d + yy, yy + m + d})
        for mon in (_MONTHS[day.month - 1], _FULL_MONTHS[day.month - 1]):
            forms.update({d + mon + y, d + mon + yy, mon + d + y})
    return {f for f in forms if len(f) >= 6}


def _header_hits(text: str, context: HeaderContext) -> Iterator[_Hit]:
    """Header values found in the squashed (and confusable-folded) text."""
    if context.empty:
        return
    keys = _keys(context)
    plain, folded = _squash(text), _fold_squash(text)
    dated = False
    for key, fkey, entity in keys.values:
        if key in plain:
            dated |= entity == "DATE"
            yield _Hit(entity, _EXACT, "header")
        elif fkey in folded:
            dated |= entity == "DATE"
            yield _Hit(entity, _FOLDED, "header")
    if not dated and any(piece in plain or fpiece in folded
                         for piece, fpiece in keys.date_pieces):
        yield _Hit("DATE", _FOLDED, "header")
    if _id_piece(text, folded, keys):
        yield _Hit("ID", _PARTIAL, "header")
    found = [(key, fkey) for key, fkey in keys.names if fkey in folded]
    yield from _near_hits(text, folded, keys, named=bool(found))
    if not found:
        return
    tokens = {_fold_squash(t) for t in re.findall(r"[^\W_]+|\|", text)}
    whole = [k for k in found if k[1] in tokens]
    exact = any(key in plain for key, _f in found)
    if len({f for _k, f in found}) >= 2 or whole:
        yield _Hit("NAME", _EXACT if exact else _FOLDED, "header")
        return
    vocabulary = clinical_vocabulary()
    inside_words = [t for t in re.findall(r"[^\W\d_]+", fold(text).upper())
                    if found[0][1] in _fold_squash(t)]
    if inside_words and all(w in vocabulary for w in inside_words):
        return  # a lone short name part inside a clinical word ("ANN" in "SCANNER")
    yield _Hit("NAME", _PARTIAL, "header")


def _near_hits(text: str, folded: str, keys: _Keys, *, named: bool) -> Iterator[_Hit]:
    """Header values found only within edits (see the module notes); a value found
    exactly is not looked for again (``named``: a name part was)."""
    seen: set[str] = set()
    for fkey, entity in keys.near:
        if entity in seen or fkey in folded or (named and entity == "NAME"):
            continue
        if _near(fkey, folded, near_edits(len(fkey))):
            seen.add(entity)
            yield _Hit(entity, _PARTIAL, "header")
    if not named and "NAME" not in seen and _name_pair(text, keys):
        seen.add("NAME")
        yield _Hit("NAME", _PARTIAL, "header")
    pieces = {folded, *(_fold_squash(t) for t in text.split())}
    for whole, own, entity in keys.wholes:
        if entity not in seen and any(_piece_of(p, whole, own) for p in pieces):
            seen.add(entity)
            yield _Hit(entity, _PARTIAL, "header")


def _id_piece(text: str, folded: str, keys: _Keys) -> bool:
    """Whether ``text`` holds a header ID cut short and not the whole ID: a prefix or
    suffix of ``PARTIAL_ID_CHARS`` characters (``PARTIAL_ID_DIGITS`` digits) anywhere, or
    of ``LABELLED_ID_CHARS`` (``LABELLED_ID_DIGITS``) right after an ID label
    (``Accession:E269`` for ``E269212827``, the rest of the line in a box of its own)."""
    if not keys.id_pieces or any(fkey in folded for fkey in keys.id_keys):
        return False
    if any(alone and piece in folded for piece, alone in keys.id_pieces):
        return True
    label = _ID_LABEL.search(fold(text))
    if label is None:
        return False
    after = _fold_squash(label.group("value"))
    return any(after.startswith(piece) or after.endswith(piece)
               for piece, _alone in keys.id_pieces)


def _name_pair(text: str, keys: _Keys) -> bool:
    """Whether two words of ``text`` are each close (see ``PAIR_EDITS``) to a different
    header name part: a full name read with errors."""
    from rapidfuzz.distance import Levenshtein

    parts = sorted({f for _k, f in keys.names if len(f) >= PAIR_LETTERS})
    if len(parts) < 2:
        return False
    words = sorted({_fold_squash(w) for w in re.findall(r"[^\W\d_]+", fold(text))
                    if len(w) >= PAIR_LETTERS})
    close = [{w for w in words if Levenshtein.distance(
        part, w, score_cutoff=edits) <= edits}
        for part in parts for edits in [min(PAIR_EDITS, max(1, len(part) // 3))]]
    return any(a != b for i, near in enumerate(close) for a in near
               for other in close[i + 1:] for b in other)


@functools.cache
def _all_names() -> frozenset[str]:
    """Every given and family name (``NameDictionary.all`` builds a new set per call)."""
    return name_dictionary().all


def _caret_split_name(text: str) -> bool:
    """True when a token reads as ``FAMILY^GIVEN`` with ``^`` read as ``A``."""
    names, vocabulary = _all_names(), clinical_vocabulary()
    for token in re.findall(r"[^\W\d_]{7,}", fold(text).upper()):
        for m in _INNER_A.finditer(token):
            left, right = token[:m.start()], token[m.end():]
            if all(len(p) >= 3 and p in names and p not in vocabulary for p in (left, right)):
                return True
    return False


def _digits_after(label: re.Pattern[str], folded: str) -> int:
    """Digits in the value after ``label`` in ``folded`` text (letters read for digits
    count: ``O5.O6.l983``); -1 when the label is not there."""
    m = label.search(folded)
    if m is None:
        return -1
    return sum(ch.isdigit() for ch in m.group("value").upper().translate(_TO_DIGIT))


def _birth_date(text: str) -> bool:
    """True when a birth-date label is followed by a value with enough digits."""
    return _digits_after(_BIRTH_LABEL, fold(text)) >= PARTIAL_DATE_DIGITS


def _labelled(text: str) -> list[str]:
    """Entities whose on-screen label is followed by a value, however the value reads:
    ``NAME`` after a name label with ``LABEL_NAME_LETTERS`` letters (``Pt: Saah Gaci``,
    ``SARAH GARCIA`` read with three letters lost), ``ID`` after an ID label with
    ``LABEL_ID_DIGITS`` digits."""
    folded = fold(text)
    out = []
    m = _NAME_LABEL.search(folded)
    if m is not None and sum(ch.isalpha() for ch in m.group("value")) >= LABEL_NAME_LETTERS:
        out.append("NAME")
    if _digits_after(_ID_LABEL, folded) >= LABEL_ID_DIGITS:
        out.append("ID")
    return out


def _only_overlay(text: str) -> bool:
    """True when every token is an overlay marker or a clinical word that is no name."""
    vocabulary, names = clinical_vocabulary(), _all_names()
    tokens = [t.strip(".'\"") for t in _TOKEN_SPLIT.split(fold(text).upper())]
    tokens = [t for t in tokens if t]
    if not tokens:
        return True
    for token in tokens:
        if token in _OVERLAY_WORDS or _OVERLAY_TOKEN.fullmatch(token):
            continue
        if token.isalpha() and token in vocabulary and token not in names:
            continue
        return False
    return True
