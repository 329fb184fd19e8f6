"""The runtime NER tagger with the shipped model (models/phi-ner) and its wiring."""

from __future__ import annotations

import functools
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.pixel.ppocr import ModelBundleError
from pipeline.profile.schema import TextSettings
from pipeline.text import CompositeTagger, HeaderContext, default_tagger
from pipeline.text.ner import NerTagger, bundle_dir, decode
from pipeline.text.spans import ENTITIES
from pipeline.text.tagger import tagger_for

EMPTY = HeaderContext()


@functools.cache
def _tagger() -> NerTagger:
    return NerTagger()


def _found(text: str) -> set[tuple[str, str]]:
    return {(text[s.start:s.end], s.entity) for s in _tagger().tag(text, EMPTY)}


@pytest.mark.parametrize(("text", "value", "entity"), [
    ("CT CHEST for John Smith", "John Smith", "NAME"),
    ("Patient: DOE^JANE ID: MRN4471203 Exam: MR BRAIN.", "DOE^JANE", "NAME"),
    ("Patient: DOE^JANE ID: MRN4471203 Exam: MR BRAIN.", "MRN4471203", "ID"),
    ("Comparison: 03/14/2021. No acute abnormality.", "03/14/2021", "DATE"),
    ("Pt Maria Garcia DOB 1948-02-11 Contrast given IV", "1948-02-11", "DATE"),
    ("Referred by Dr. Hans Becker.", "Hans Becker", "NAME"),
    ("MULLER~KARL", "MULLER~KARL", "NAME"),
    ("Name:SMITH~JOHN", "SMITH~JOHN", "NAME"),
    ("ID:0O4471203", "0O4471203", "ID"),
    ("DOB: 19451103", "19451103", "DATE"),
    ("Acc: A84751350O", "A84751350O", "ID"),
    ("94Y F", "94Y", "AGE"),
])
def test_planted_phi_is_found(text: str, value: str, entity: str) -> None:
    assert (value, entity) in _found(text)


@pytest.mark.parametrize("text", [
    "CT CHEST W/O CONTRAST", "MR BRAIN Parkinson disease follow up", "AX T2 FLAIR",
    "XR Left knee Baker cyst", "67Y M", "W 400 L 40",
])
def test_clinical_text_has_no_names(text: str) -> None:
    assert all(entity != "NAME" for _, entity in _found(text))


def test_one_name_span_in_a_description() -> None:
    text = "CT CHEST for John Smith"
    names = [s for s in _tagger().tag(text, EMPTY) if s.entity == "NAME"]
    assert [(s.start, s.end, s.source) for s in names] == [(13, 23, "model")]
    assert 0.5 <= names[0].confidence <= 1.0


@pytest.mark.parametrize("repeat", [8, 10])
def test_long_text_is_read_in_windows(repeat: int) -> None:
    text = "mild degenerative changes without acute fracture. " * repeat
    text += "Dictated by John Smith on 03/14/2021."
    assert len(_tagger()._load()[1].encode(text).ids) > _tagger().window
    spans = _tagger().tag(text, EMPTY)
    for value, entity in (("John Smith", "NAME"), ("03/14/2021", "DATE")):
        at = text.index(value)
        covered = {i for s in spans if s.entity == entity for i in range(s.start, s.end)}
        assert {i for i in range(at, at + len(value)) if not text[i].isspace()} <= covered
    assert all(s.start >= text.index("John") - 1 for s in spans)


def test_tag_many_equals_tag_and_keeps_empty_texts() -> None:
    texts = ["CT CHEST for John Smith", "", "DOB: 19451103", "AX T2"]
    assert _tagger().tag_many(texts, EMPTY) == [_tagger().tag(t, EMPTY) for t in texts]


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=120))
def test_spans_lie_inside_the_text_with_known_entities(text: str) -> None:
    for span in _tagger().tag(text, EMPTY):
        assert 0 <= span.start < span.end <= len(text)
        assert span.entity in ENTITIES and span.source == "model"


def test_tagger_pickles_without_its_session() -> None:
    tagger = NerTagger(threshold=0.6)
    before = tagger.tag("CT CHEST for John Smith", EMPTY)
    blob = pickle.dumps(tagger)
    assert len(blob) < 50_000
    assert pickle.loads(blob).tag("CT CHEST for John Smith", EMPTY) == before


def test_changed_bundle_file_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "phi-ner"
    shutil.copytree(bundle_dir(), copy)
    with (copy / "tokenizer.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(ModelBundleError, match="sha256"):
        NerTagger(copy)


def test_missing_bundle_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelBundleError):
        NerTagger(tmp_path)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_threshold_must_lie_strictly_between_0_and_1(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        NerTagger(threshold=threshold)


def test_runtime_never_imports_torch_or_transformers() -> None:
    code = ("import sys; from pipeline.text.ner import NerTagger; "
            "from pipeline.text import HeaderContext; "
            "NerTagger().tag('CT CHEST for John Smith', HeaderContext()); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_tagger_for_uses_the_rules_alone_unless_ner_is_on() -> None:
    assert tagger_for(TextSettings(ner=False, ner_threshold=0.5)) is default_tagger()
    combined = tagger_for(TextSettings(ner=True, ner_threshold=0.7))
    assert combined is tagger_for(TextSettings(ner=True, ner_threshold=0.7))
    assert isinstance(combined, CompositeTagger)
    models = [t for t in combined.taggers if isinstance(t, NerTagger)]
    assert len(models) == 1 and models[0].threshold == 0.7
    assert len(combined.taggers) == len(default_tagger().taggers) + 1
    text = "CT CHEST for John Smith"
    assert pickle.loads(pickle.dumps(combined)).tag(text, EMPTY) == combined.tag(text, EMPTY)


def test_rules_and_model_together_keep_header_certainty() -> None:
    tagger = tagger_for(TextSettings(ner=True, ner_threshold=0.5))
    context = HeaderContext(names=frozenset({"SMITH", "JOHN"}))
    spans = tagger.tag("CT CHEST for John Smith", context)
    names = [s for s in spans if s.entity == "NAME"]
    assert len(names) == 1 and (names[0].start, names[0].end) == (13, 23)
    assert names[0].source == "header" and names[0].confidence > NerTagger.max_confidence


def _probs(rows: list[dict[str, float]]) -> np.ndarray:
    labels = _tagger().labels
    out = np.zeros((len(rows), len(labels)), np.float32)
    for k, row in enumerate(rows):
        for label, p in row.items():
            out[k, labels.index(label)] = p
        out[k, 0] = 1.0 - sum(row.values())
    return out


def _decoded(text: str, offsets: list[tuple[int, int]],
             rows: list[dict[str, float]]) -> list[tuple[str, str]]:
    found = decode(_probs(rows), offsets, _tagger().labels, 0.5, text)
    return [(text[s:e], ent) for s, e, ent, _ in found]


@pytest.mark.parametrize(("text", "offsets", "rows", "expected"), [
    # one word cut into tokens that disagree: one span, the word's majority entity
    ("Jacob /", [(0, 1), (1, 5), (6, 7)],
     [{"B-NAME": 0.6, "B-LOCATION": 0.3}, {"I-LOCATION": 0.5, "I-NAME": 0.4}, {}],
     [("Jacob", "NAME")]),
    # a span may not end inside a word: the word is PHI or not as a whole
    ("Reising 12", [(0, 3), (3, 7), (8, 10)],
     [{"B-NAME": 0.9}, {"I-NAME": 0.3}, {}], [("Reising", "NAME")]),
    ("Ace 12", [(0, 1), (1, 3), (4, 6)], [{"B-NAME": 0.7}, {"I-NAME": 0.2}, {}], []),
    # letters against digits and separate words are not pooled
    ("Damian96y", [(0, 6), (6, 8), (8, 9)],
     [{"B-NAME": 0.9}, {"B-AGE": 0.9}, {"I-AGE": 0.9}], [("Damian", "NAME"), ("96y", "AGE")]),
    ("Lyon Smith", [(0, 4), (5, 10)], [{"B-LOCATION": 0.9}, {"B-NAME": 0.9}],
     [("Lyon", "LOCATION"), ("Smith", "NAME")]),
])
def test_tokens_of_one_word_are_decoded_together(
    text: str, offsets: list[tuple[int, int]], rows: list[dict[str, float]],
    expected: list[tuple[str, str]],
) -> None:
    assert _decoded(text, offsets, rows) == expected


@pytest.mark.parametrize(("text", "offsets", "rows", "expected"), [
    # an OCR-merged separator read as part of the value is cut from either edge
    ("Pereira/ACC7", [(0, 7), (7, 8), (8, 12)], [{"B-NAME": 0.9}, {"I-NAME": 0.8}, {}],
     [("Pereira", "NAME")]),
    ("/50118-9338 /", [(0, 1), (1, 6), (6, 7), (7, 11), (12, 13)],
     [{"B-ID": 0.9}, {"I-ID": 0.9}, {"I-ID": 0.9}, {"I-ID": 0.9}, {}], [("50118-9338", "ID")]),
    ("Korzekwa~|", [(0, 8), (8, 9), (9, 10)], [{"B-NAME": 0.9}, {"I-NAME": 0.9}, {"I-NAME": 0.7}],
     [("Korzekwa", "NAME")]),
    # separators inside a value stay; a URL keeps its closing slash
    ("01/02/2003", [(0, 2), (2, 3), (3, 5), (5, 6), (6, 10)],
     [{"B-DATE": 0.9}, *[{"I-DATE": 0.9}] * 4], [("01/02/2003", "DATE")]),
    ("http://a.com/", [(0, 4), (4, 5), (5, 6), (6, 7), (7, 12), (12, 13)],
     [{"B-URL": 0.9}, *[{"I-URL": 0.9}] * 5], [("http://a.com/", "URL")]),
    ("Ann/", [(0, 3), (3, 4)], [{"B-NAME": 0.2}, {"I-NAME": 0.9}], []),
])
def test_separators_never_begin_or_end_a_span(
    text: str, offsets: list[tuple[int, int]], rows: list[dict[str, float]],
    expected: list[tuple[str, str]],
) -> None:
    assert _decoded(text, offsets, rows) == expected
