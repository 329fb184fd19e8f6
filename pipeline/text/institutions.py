"""Institution names by their shape: proper words followed by a hospital word.

"WESTWAY MEDICAL", "St Elsewhere Hospital", "Mayo Clinic", "New Sarahfurt Medical
Center": words that are not clinical vocabulary, then a head word that names a care
institution (and optional trailing generic words). Used for burned-in text, where an
institution often has no counterpart in the header; free text keeps to the header
values, where "past medical history" must stay readable.
"""

from __future__ import annotations

import re

from pipeline.text.context import HeaderContext
from pipeline.text.spans import PhiSpan, fold
from pipeline.text.vocabulary import clinical_vocabulary

#: Words that head a care institution's name.
HEADS = frozenset({
    "HOSPITAL", "HOSPITALS", "HOSP", "CLINIC", "CLINICS", "INFIRMARY", "KLINIKUM", "KLINIK",
    "OSPEDALE", "HOPITAL", "ZIEKENHUIS", "SANATORIUM", "MEDICAL", "HEALTHCARE",
})
#: Generic words that may follow the head ("Medical Center", "Hospital Trust").
TAILS = frozenset({
    "CENTER", "CENTRE", "CTR", "GROUP", "ASSOCIATES", "INSTITUTE", "TRUST", "SYSTEM",
    "NETWORK", "CAMPUS", "HOSPITAL", "CLINIC", "INC", "LLC", "LTD",
})
#: Short words that still belong to a name ("St Mary", "Mt Sinai").
_NAME_PREFIXES = frozenset({"ST", "MT", "SAINT", "MOUNT"})
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")
_CONFIDENCE = 0.8


class InstitutionTagger:
    """Tags institution names by shape (implements ``PhiTagger``; ``context`` unused)."""

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """Return INSTITUTION spans: 1–4 proper words, a head word, optional tails."""
        words = [(m.start(), m.end(), m.group(0).upper()) for m in _WORD.finditer(fold(text))]
        vocabulary = clinical_vocabulary()
        spans = []
        for index, (_, _, word) in enumerate(words):
            if word not in HEADS:
                continue
            first = index
            while first > 0 and index - first < 4:
                before = words[first - 2][2] if first >= 2 else ""
                if not (_proper(words[first - 1][2], vocabulary) or before in _NAME_PREFIXES):
                    break
                first -= 1
            if first == index:
                continue  # a head word alone ("medical") names nobody
            last = index
            while last + 1 < len(words) and words[last + 1][2] in TAILS:
                last += 1
            spans.append(PhiSpan(words[first][0], words[last][1], "INSTITUTION", _CONFIDENCE,
                                 "pattern"))
        return tuple(spans)


def _proper(word: str, vocabulary: frozenset[str]) -> bool:
    """A word that can be part of a name: not clinical vocabulary, not generic."""
    if word in _NAME_PREFIXES:
        return True
    if len(word) < 3 or word in HEADS or word in TAILS:
        return False
    return word not in vocabulary and word.lower() not in vocabulary
