"""Seeded synthetic PHI NER data: DICOM free-text fields and OCR-style annotation strings.

Templates (``data/templates.yaml``) and vocabularies (``data/vocabulary.yaml``) are data
files; PHI values come from Faker (several locales) and the formats of the vocabulary.
Clinical words that are also person names (from :mod:`pipeline.text.vocabulary`) are
planted as negatives. OCR-style strings get OCR noise: ``^`` read as ``~``, merged or
dropped spaces, confusable characters (0/O, 1/l/I, 5/S, 8/B) and case changes.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import itertools
import json
import random
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from faker import Faker

#: The PHI entities the model tags, in label order.
ENTITY_ORDER: tuple[str, ...] = (
    "NAME", "ID", "DATE", "AGE", "INSTITUTION", "LOCATION", "PHONE", "EMAIL", "URL", "OTHER",
)
_SLOT = re.compile(r"\{([A-Za-z_]+)\}")
_CONFUSABLE = {"0": "O", "O": "0", "1": "l", "l": "1", "I": "l", "5": "S", "S": "5", "8": "B"}
_NOISY_KINDS = frozenset({"ocr"})
#: Share of free-form examples (keyed values and filler in random order) in every split.
MIXED_SHARE = 0.35
#: Slots that make a value of an entity in a restricted form. ``ADDRESS`` is a LOCATION
#: that is a street or full address, never a lone city: several Faker locales (fr_FR,
#: es_ES, pt_BR) make a third to a half of their cities from surnames, so a city with no
#: key or context before it is a name as often as a place and its label cannot be learnt.
#: ``LONE`` is a NAME that is one surname or one given name.
SLOT_ENTITY = {"ADDRESS": "LOCATION", "LONE": "NAME"}


@dataclass(frozen=True)
class Example:
    """One labelled text: ``spans`` are ``(start, end, entity)`` character offsets."""

    text: str
    spans: tuple[tuple[int, int, str], ...]
    kind: str

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable form (the input of :func:`data_hash`)."""
        return {"text": self.text, "spans": [list(s) for s in self.spans], "kind": self.kind}


def _load(name: str) -> dict[str, Any]:
    raw = resources.files("training.ner").joinpath("data", name).read_text("utf-8")
    return dict(yaml.safe_load(raw))


@functools.cache
def vocabulary() -> dict[str, Any]:
    """The fillers, formats and locales of ``data/vocabulary.yaml``."""
    return _load("vocabulary.yaml")


@functools.cache
def templates() -> dict[str, dict[str, list[str]]]:
    """The ``train`` and ``heldout`` templates of ``data/templates.yaml``, per text kind."""
    return {k: dict(v) for k, v in _load("templates.yaml").items()}


@functools.cache
def name_like_clinical_words() -> tuple[str, ...]:
    """Clinical words that are also given or family names (planted as negatives)."""
    from pipeline.text.vocabulary import clinical_vocabulary, name_dictionary

    words = clinical_vocabulary() & name_dictionary().all
    return tuple(sorted(w for w in words if w.isalpha() and len(w) > 2))


@functools.cache
def _fakers(locales: tuple[str, ...]) -> list[Faker]:
    """One Faker per locale, built once per process (reseeded by each generator).

    Some Faker locales build their city list from a set (order depends on the string
    hash seed); those lists are sorted so the data is the same in every process.
    """
    fakers = [Faker(locale) for locale in locales]
    for fake in fakers:
        for provider in fake.get_providers():
            cities = getattr(provider, "cities", None)
            if isinstance(cities, list):
                provider.cities = sorted(cities)
    return fakers


class _Maker:
    """Makes PHI values and fillers from one seeded random stream."""

    def __init__(self, rng: random.Random) -> None:
        vocab = vocabulary()
        self.rng = rng
        self.fillers: dict[str, list[str]] = {k: [str(x) for x in v]
                                              for k, v in vocab["fillers"].items()}
        self.formats: dict[str, list[str]] = vocab["formats"]
        self.fakers = _fakers(tuple(vocab["locales"]))
        for i, fake in enumerate(self.fakers):
            fake.seed_instance(rng.randrange(2**31) + i)
        self.clin = name_like_clinical_words()

    def faker(self) -> Faker:
        return self.rng.choice(self.fakers)

    def pattern(self, fmt: str) -> str:
        digits, letters = "0123456789", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
        table = {"#": digits, "?": letters, "@": digits + letters}
        return "".join(self.rng.choice(table[c]) if c in table else c for c in fmt)

    def value(self, slot: str) -> str:
        """One value for ``slot`` (an entity, ``AGE_YOUNG`` or a filler name)."""
        rng = self.rng
        fake = self.faker()
        if slot == "NAME":
            first, last = fake.first_name(), fake.last_name()
            fmt = rng.choice(self.formats["name"])
            return fmt.format(first=first, last=last, FIRST=first.upper(), LAST=last.upper(),
                              last2=fake.last_name(), i=first[0], I=first[0].upper())
        if slot == "LONE":
            word = fake.last_name() if rng.random() < 0.7 else fake.first_name()
            style = rng.random()
            return word.upper() if style < 0.4 else word if style < 0.9 else word.lower()
        if slot == "overlay":
            return self.pattern(rng.choice(self.formats["overlay"]))
        if slot == "ID":
            return self.pattern(rng.choice(self.formats["id"]))
        if slot == "DATE":
            day = datetime.date(1920, 1, 1) + datetime.timedelta(days=rng.randrange(38000))
            return day.strftime(rng.choice(self.formats["date"]))
        if slot in ("AGE", "AGE_YOUNG"):
            n = rng.randint(90, 109) if slot == "AGE" else rng.randint(1, 89)
            return rng.choice(self.formats["age"]).format(n=n if n > 9 else f"0{n}")
        if slot == "INSTITUTION":
            city, last = fake.city(), fake.last_name()
            return rng.choice(self.formats["institution"]).format(
                city=city, CITY=city.upper(), last=last, company=fake.company())
        if slot in ("LOCATION", "ADDRESS"):
            choice = rng.random() if slot == "LOCATION" else rng.random() * 0.75
            if choice < 0.5:
                return ", ".join(fake.address().splitlines())
            return fake.street_address() if choice < 0.75 else fake.city()
        if slot == "PHONE":
            return str(fake.phone_number())
        if slot == "EMAIL":
            return str(fake.email())
        if slot == "URL":
            url = str(fake.url())
            return url + "viewer?id=" + self.pattern("@@@@@@@@") if rng.random() < 0.3 else url
        if slot == "OTHER":
            return self.pattern(rng.choice(self.formats["other"]))
        if slot == "clin":
            word = rng.choice(self.clin)
            return word if rng.random() < 0.5 else word.title()
        if slot == "time":
            return f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"
        if slot == "num":
            return str(rng.randrange(1, 1000))
        return rng.choice(self.fillers[slot])


def _char_class(ch: str) -> int:
    return 0 if ch.isalpha() else 1 if ch.isdigit() else 2 if not ch.isspace() else 3


def _noise(text: str, rng: random.Random, level: float) -> str:
    """Same-length OCR confusions, then dropped spaces (only inside one segment)."""
    chars = []
    for ch in text:
        if ch == "^" and rng.random() < 0.6:
            ch = "~"
        elif ch in _CONFUSABLE and rng.random() < level:
            ch = _CONFUSABLE[ch]
        chars.append(ch)
    out = "".join(chars)
    if rng.random() < level * 3:
        out = re.sub(r" ", lambda m: "" if rng.random() < 0.5 else " ", out)
    return out


def render(template: str, maker: _Maker, kind: str) -> Example:
    """Fill ``template`` and return the labelled text (noisy when ``kind`` is OCR)."""
    rng = maker.rng
    segments: list[tuple[str, str | None]] = []
    pos = 0
    for m in _SLOT.finditer(template):
        segments.append((template[pos:m.start()], None))
        slot = m.group(1)
        value = maker.value(slot).strip()
        label = SLOT_ENTITY.get(slot, slot)
        segments.append((value, label if label in ENTITY_ORDER else None))
        pos = m.end()
    segments.append((template[pos:], None))
    case = rng.random()
    noisy = kind in _NOISY_KINDS
    level = rng.choice((0.0, 0.02, 0.05, 0.1)) if noisy else 0.0
    text = ""
    spans: list[tuple[int, int, str]] = []
    for seg, entity in segments:
        if not seg:
            continue
        if case < 0.15:
            seg = seg.upper()
        elif case < 0.2 and entity is None:
            seg = seg.lower()
        if noisy:
            seg = _noise(seg, rng, level)
        if entity is not None:
            seg = seg.strip()
        if not seg:
            continue
        if entity is not None:
            if (text.endswith(" ") and noisy and rng.random() < level * 3 and len(text) > 1
                    and _char_class(text[-2]) != _char_class(seg[0])):
                text = text[:-1]  # merged with the word before: OCR dropped the space
            spans.append((len(text), len(text) + len(seg), entity))
        elif (spans and spans[-1][1] == len(text) and seg[0] == " " and noisy and len(seg) > 1
              and rng.random() < level * 3 and _char_class(text[-1]) != _char_class(seg[1])):
            seg = seg[1:]  # merged with the entity before
        text += seg
    return Example(text, tuple(spans), kind)


@functools.cache
def _plain_words() -> tuple[str, ...]:
    """Clinical and DICOM words (never PHI) for free-form filler."""
    from pipeline.text.vocabulary import clinical_vocabulary

    return tuple(sorted(w for w in clinical_vocabulary() if w.isalpha() and len(w) > 2))


def _mixed(maker: _Maker) -> str:
    """A free-form template: keyed PHI values and filler in random order and punctuation.

    A value with no key is never a lone city (``{ADDRESS}``), and one that follows a
    value of the same entity is set apart by punctuation: two IDs or two institutions
    joined by a bare space read as one value, so their gold split could not be learnt.
    """
    rng, vocab = maker.rng, vocabulary()
    parts: list[tuple[str, str | None, bool]] = []  # (text, entity, starts with a key)
    for _ in range(rng.randint(1, 6)):
        roll = rng.random()
        if roll < 0.45:
            entity = rng.choice(ENTITY_ORDER)
            key = rng.choice(vocab["keys"][entity]) + rng.choice(vocab["separators"])
            keyed = rng.random() < 0.7
            slot = "ADDRESS" if entity == "LOCATION" and not keyed else entity
            parts.append(((key if keyed else "") + "{" + slot + "}", entity, keyed))
        elif roll < 0.75:
            words = [rng.choice(_plain_words()) for _ in range(rng.randint(1, 4))]
            style = rng.random()
            parts.append((" ".join(w.lower() if style < 0.4 else w if style < 0.7
                                   else w.title() for w in words), None, False))
        else:
            slot = rng.choice(("mod", "body", "proc", "finding", "reason", "history", "eponym",
                               "clin", "time", "num", "AGE_YOUNG", "action", "station"))
            parts.append(("{" + slot + "}", None, False))
    text = parts[0][0]
    marked = [j for j in vocab["joiners"] if j.strip()]
    for (_, before, _), (part, after, keyed) in itertools.pairwise(parts):
        same = after is not None and after == before and not keyed
        text += rng.choice(marked if same else vocab["joiners"]) + part
    if rng.random() < 0.3:
        text += rng.choice((".", ")", ";", ",", " ."))
    return text.replace("\t", " ")


def generate(n: int, seed: int, *, heldout: bool = False,
             extra_share: float = 0.0) -> list[Example]:
    """``n`` examples from ``seed``; ``heldout`` mixes in the held-out templates (test),
    ``extra_share`` of the examples come from the train-only ``extra`` templates (at 0,
    the random stream is the one without them, so splits made before them are unchanged).
    """
    rng = random.Random(seed)
    maker = _Maker(rng)
    tpl = templates()
    kinds = sorted(tpl["train"])
    extra_kinds = sorted(tpl["extra"])
    out = []
    for _ in range(n):
        if extra_share > 0 and rng.random() < extra_share:
            kind = rng.choice(extra_kinds)
            out.append(render(rng.choice(tpl["extra"][kind]), maker, kind))
            continue
        if rng.random() < MIXED_SHARE:
            out.append(render(_mixed(maker), maker, "mixed"))
            continue
        kind = rng.choice(kinds)
        pool = list(tpl["train"][kind])
        if heldout and rng.random() < 0.5:
            pool = list(tpl["heldout"].get(kind, pool))
        out.append(render(rng.choice(pool), maker, kind))
    return out


def make_splits(seed: int, sizes: dict[str, Any]) -> dict[str, list[Example]]:
    """Train, validation and test splits from disjoint seeds (``seed``, +1, +2); the
    train-only templates make ``sizes["extra_share"]`` (default 0) of the train split."""
    return {
        "train": generate(sizes["train"], seed, extra_share=float(sizes.get("extra_share", 0))),
        "validation": generate(sizes["validation"], seed + 1),
        "test": generate(sizes["test"], seed + 2, heldout=True),
    }


def data_hash(splits: dict[str, list[Example]]) -> str:
    """sha256 of the serialised splits (canonical JSON)."""
    payload = {k: [e.to_json() for e in v] for k, v in sorted(splits.items())}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()
