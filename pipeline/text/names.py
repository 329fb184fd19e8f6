"""Dictionary tagging of person names: Faker name lists, cues and name shapes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from pipeline.text.context import NAME_PARTICLES, HeaderContext
from pipeline.text.spans import PhiSpan, absorb_initials, fold, merge_overlapping
from pipeline.text.vocabulary import NameDictionary, clinical_vocabulary, name_dictionary

_TOKEN = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
#: Titles after which the next capitalised word is a name even if no list knows it.
_HONORIFICS = frozenset({
    "DR", "DOCTOR", "PROF", "PROFESSOR", "MRS", "MISS", "MME", "MLLE", "HERR", "FRAU", "SR",
    "SRA", "DRA", "SIG", "SIGRA", "DHR", "MEVR",
})
#: Titles that are also modality or disease abbreviations unless written "Mr" / "Mr.".
_AMBIGUOUS_HONORIFICS = frozenset({"MR", "MS"})
#: Words after which a known name (not a clinical word) is taken as a person's name.
_CUES = frozenset({
    "PATIENT", "PT", "PTS", "NAME", "FOR", "BY", "PER", "SIGNED", "ATTENDING", "REFERRING",
    "REFERRED", "PHYSICIAN", "RADIOLOGIST", "TECH", "TECHNOLOGIST", "DICTATED", "READ",
    "REVIEWED", "ORDERED", "CC", "RESIDENT", "FELLOW", "NURSE", "RN", "TO", "FROM", "DEAR",
    "THANKS", "CONTACT", "SURGEON", "PROVIDER", "CLINICIAN", "OPERATOR", "PERFORMED",
    "APPROVED", "VERIFIED", "TRANSCRIBED", "MOTHER", "FATHER", "WIFE", "HUSBAND", "SON",
    "DAUGHTER", "SISTER", "BROTHER", "SPOUSE", "GUARDIAN", "PATIENTS", "MR", "MS", "WITH",
    "CALLED", "INFORMED", "NOTIFIED", "DISCUSSED", "AUTHOR", "OBSERVER", "REPORTER",
})
#: Cues that, followed by a colon, introduce a name whatever the word is.
_COLON_CUES = frozenset({"NAME", "PATIENT", "PHYSICIAN", "RADIOLOGIST", "REFERRING",
                         "ATTENDING", "TECHNOLOGIST", "TECH", "OPERATOR", "SIGNED", "AUTHOR"})
_SUFFIX = re.compile(r"\s*,?\s*(?:MD|M\.D\.|PHD|PH\.D\.|RN|NP|FRCR|FRCPC?|MBBS|DDS)(?![A-Za-z])",
                     re.IGNORECASE)
_CARET = re.compile(
    r"(?<![^\W\d_])(?<!['’-])([^\W\d_]+(?:['’-][^\W\d_]+)*)\^([^\W\d_]+(?:['’-][^\W\d_]+)*)"
    r"(?:\^[^\W\d_]*(?:['’.-][^\W\d_]*)*)*"
)
_SPACE_GAP = re.compile(r"\s+|\s*-\s*")
_CUE_GAP = re.compile(r"\s*[:.\-]?\s*")
_COMMA_GAP = re.compile(r"\s*,\s*")
_INITIAL_GAP = re.compile(r"\.?\s+|\.")


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    key: str
    cap: bool
    raw: bool     # in the name lists
    strong: bool  # in the name lists and not clinical vocabulary
    first: bool   # a given name (and not clinical vocabulary)
    vocab: bool


class DictionaryTagger:
    """Tags person names known to Faker's name lists, in name-like positions.

    A name from the lists is flagged when two of them stand side by side, when
    it follows a cue (``Dr``, ``Mrs``, ``patient``, ``for``, ``by``, ``signed``...),
    or when it is written ``Last^First`` or ``Last, First``. Words of the
    clinical vocabulary are never flagged on their own, but are taken as part
    of a name already found (``John Chase``).
    """

    def __init__(self, names: NameDictionary | None = None,
                 vocabulary: frozenset[str] | None = None) -> None:
        self._names = names if names is not None else name_dictionary()
        self._all = self._names.all
        self._vocab = vocabulary if vocabulary is not None else clinical_vocabulary()

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """Return the NAME spans of ``text`` (``context`` is not used)."""
        if not text:
            return ()
        folded = fold(text)
        tokens = self._tokens(folded)
        spans = [PhiSpan(s, e, "NAME", c, "dictionary") for s, e, c in self._runs(folded, tokens)]
        return merge_overlapping(absorb_initials(folded, spans)) if spans else ()

    def _tokens(self, text: str) -> list[_Token]:
        any_upper = any(ch.isupper() for ch in text)
        out = []
        for m in _TOKEN.finditer(text):
            word = m.group(0)
            key = _key(word.upper())
            vocab = self._is_vocab(key)
            raw = key in self._all
            out.append(_Token(
                m.start(), m.end(), key, word[0].isupper() or not any_upper, raw,
                raw and not vocab, key in self._names.first and not vocab, vocab,
            ))
        return out

    def _is_vocab(self, key: str) -> bool:
        if key in self._vocab:
            return True
        return len(key) > 3 and key.endswith("S") and (
            key[:-1] in self._vocab or (key.endswith("ES") and key[:-2] in self._vocab)
        )

    def _runs(self, text: str, toks: list[_Token]) -> Iterator[tuple[int, int, float]]:
        for m in _CARET.finditer(text) if "^" in text else ():
            parts = [_key(p.upper()) for p in (m.group(1), m.group(2))]
            if any(p in self._all or not self._is_vocab(p) for p in parts):
                yield m.start(), m.end(), 0.85
        for i, tok in enumerate(toks):
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            gap = text[tok.end:nxt.start] if nxt is not None else ""
            if nxt is not None and self._after_cue(text, tok, nxt, gap):
                yield self._extend(text, toks, i + 1, 0.8)
            if nxt is not None and i + 2 < len(toks):
                run = self._around_initial(text, tok, nxt, toks[i + 2], gap)
                if run is not None:
                    yield run
            k = self._skip_particles(text, toks, i)
            if k is not None and self._pair(tok, toks[k]):
                yield self._extend(text, toks, i, 0.7)
            if (nxt is not None and _COMMA_GAP.fullmatch(gap) and "," in gap and tok.cap
                    and (tok.raw or not tok.vocab) and nxt.cap and nxt.first):
                yield tok.start, self._extend(text, toks, i + 1, 0.75)[1], 0.75
            if (tok.cap and (tok.raw or not tok.vocab) and len(tok.key) > 1
                    and _SUFFIX.match(text, tok.end)):
                yield tok.start, tok.end, 0.75

    def _around_initial(self, text: str, tok: _Token, initial: _Token, last: _Token, gap: str
                        ) -> tuple[int, int, float] | None:
        """Return ``John Q. Public`` / ``Dr. J. Smith`` runs (an initial with a period)."""
        if len(initial.key) != 1 or not initial.cap or not text.startswith(".", initial.end):
            return None
        if not _INITIAL_GAP.fullmatch(text, initial.end, last.start):
            return None
        if not last.cap or len(last.key) < 2:
            return None
        if tok.first and tok.cap and _SPACE_GAP.fullmatch(gap):
            return tok.start, last.end, 0.75
        if self._strong_cue(text, tok, gap) and (last.raw or not last.vocab):
            return initial.start, last.end, 0.8
        return None

    @staticmethod
    def _strong_cue(text: str, cue: _Token, gap: str) -> bool:
        """True for a title (``Dr``, ``Mrs``, ``Mr.``) or a colon cue (``Name:``)."""
        if not _CUE_GAP.fullmatch(gap):
            return False
        word = text[cue.start:cue.end]
        return cue.key in _HONORIFICS or (
            cue.key in _AMBIGUOUS_HONORIFICS and (not word.isupper() or "." in gap)
        ) or (cue.key in _COLON_CUES and ":" in gap)

    def _after_cue(self, text: str, cue: _Token, tok: _Token, gap: str) -> bool:
        if not _CUE_GAP.fullmatch(gap):
            return False
        if len(tok.key) < 2 or not (tok.cap or tok.raw):
            return False
        if self._strong_cue(text, cue, gap):
            return tok.raw or not tok.vocab
        return cue.key in _CUES and tok.cap and tok.strong

    @staticmethod
    def _skip_particles(text: str, toks: list[_Token], i: int) -> int | None:
        """Return the index of the next word after ``toks[i]`` past name particles."""
        k = i + 1
        while k < len(toks) and _SPACE_GAP.fullmatch(text, toks[k - 1].end, toks[k].start):
            if toks[k].key not in NAME_PARTICLES or k - i > 2:
                return k
            k += 1
        return None

    def _pair(self, a: _Token, b: _Token) -> bool:
        if not (a.cap and b.cap) or len(a.key) < 2 or len(b.key) < 2:
            return False
        if a.strong and (b.raw or (a.first and not b.vocab and len(b.key) >= 3)):
            return True
        return a.raw and b.strong

    def _extend(self, text: str, toks: list[_Token], i: int, conf: float
                ) -> tuple[int, int, float]:
        """Return the run of name tokens starting at ``toks[i]``."""
        j = i
        after_first = toks[i].first
        while j + 1 < len(toks) and j - i < 4:
            cur, nxt = toks[j], toks[j + 1]
            gap = text[cur.end:nxt.start]
            if nxt.key in NAME_PARTICLES and len(nxt.key) > 1:  # "de", "van"
                k = self._skip_particles(text, toks, j)
                if k is not None and toks[k].cap and (toks[k].raw or not toks[k].vocab):
                    j = k
                    continue
                break
            initial_gap = len(cur.key) == 1 and _INITIAL_GAP.fullmatch(gap)
            if not nxt.cap or not (_SPACE_GAP.fullmatch(gap) or initial_gap):
                break
            if len(nxt.key) == 1:  # an initial: keep going if a name follows it
                if j + 2 < len(toks) and _INITIAL_GAP.fullmatch(text, nxt.end, toks[j + 2].start):
                    j += 1
                    continue
                break
            if not (nxt.raw or (after_first and not nxt.vocab and len(nxt.key) >= 3)):
                break
            after_first = nxt.first
            j += 1
        while j > i and len(toks[j].key) == 1:
            j -= 1
        return toks[i].start, toks[j].end, conf


def _key(word: str) -> str:
    """Return the lookup form of a token: no possessive ``'S``, no ``O'`` / ``D'`` prefix."""
    for apostrophe in ("'", "’"):
        if apostrophe in word:
            head, _, tail = word.partition(apostrophe)
            if tail == "S":
                return head
            if len(head) == 1:
                return tail
            return head + tail
    return word
