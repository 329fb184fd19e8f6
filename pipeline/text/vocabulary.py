"""Word lists the dictionary tagger needs: clinical vocabulary and person names.

Both are derived at run time from installed packages (pydicom, Faker) plus the
small supplement in ``data/vocabulary.yaml``; each is built once per process.
"""

from __future__ import annotations

import functools
import importlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import cast

import yaml

from pipeline.text.context import NAME_PARTICLES
from pipeline.text.spans import fold

logger = logging.getLogger(__name__)

#: Faker locales whose person providers feed the name dictionary.
NAME_LOCALES: tuple[str, ...] = (
    "en_US", "en_GB", "en_IE", "en_IN", "en_AU", "en_CA", "de_DE", "de_AT", "fr_FR", "es_ES",
    "es_MX", "it_IT", "nl_NL", "pt_BR", "pt_PT", "pl_PL", "sv_SE", "da_DK",
)
_WORD = re.compile(r"[^\W\d_]+")
_ROMAN = re.compile(r"[IVXLCDM]+")


@dataclass(frozen=True)
class NameDictionary:
    """Upper-cased, accent-folded given names and family names."""

    first: frozenset[str]
    last: frozenset[str]

    @property
    def all(self) -> frozenset[str]:
        """Every name, given or family."""
        return self.first | self.last


def _words(text: str) -> list[str]:
    return [fold(w).upper() for w in _WORD.findall(text)]


@functools.cache
def clinical_vocabulary() -> frozenset[str]:
    """Return the words that are never taken as a name by dictionary alone.

    Sources: the words of pydicom's concept-dictionary code meanings that occur
    in lower case (proper nouns and eponyms such as "Parkinson", which only
    occur capitalised, are left out), the words of the DICOM data dictionary's
    element names, and the lists of ``data/vocabulary.yaml``.
    """
    from pydicom.datadict import DicomDictionary
    from pydicom.sr._concepts_dict import concepts

    words: set[str] = set()
    for scheme in concepts.values():
        for entry_codes in scheme.values():
            codes = cast(dict[str, tuple[str, list[int]]], entry_codes)
            for meaning, _cids in codes.values():
                for word in _WORD.findall(meaning):
                    if word.islower() or (word.isupper() and len(word) > 1):
                        words.add(fold(word).upper())
    for entry in DicomDictionary.values():
        words.update(_words(entry[2]))
    words.update(_supplement())
    logger.debug("clinical vocabulary built with %d words", len(words))
    return frozenset(w for w in words if len(w) > 1)


def _supplement() -> set[str]:
    """Return the words of ``data/vocabulary.yaml`` (every list in it)."""
    raw = resources.files("pipeline.text").joinpath("data/vocabulary.yaml").read_text("utf-8")
    data = yaml.safe_load(raw) or {}
    out: set[str] = set()
    for values in data.values():
        for value in values or ():
            out.add(str(value).upper())
    return out


@functools.cache
def name_dictionary() -> NameDictionary:
    """Return given and family names read from Faker's person providers.

    Only the providers' ``first_names`` and ``last_names`` attributes are read;
    no network. Locales Faker lacks are skipped.
    """
    first: set[str] = set()
    last: set[str] = set()
    for locale in NAME_LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except (ImportError, AttributeError):
            logger.debug("Faker has no person provider for one configured locale")
            continue
        for attr, target in (("first_names", first), ("last_names", last)):
            for name in getattr(provider, attr, ()) or ():
                target.update(_words(str(name)))
    keep = {
        w for w in first | last
        if len(w) > 1 and w not in NAME_PARTICLES and not _ROMAN.fullmatch(w)
    }
    logger.debug("name dictionary built with %d names", len(keep))
    return NameDictionary(frozenset(first & keep), frozenset(last & keep))
