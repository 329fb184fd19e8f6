"""The byte-level BPE tokenizer: round trip, no unknown tokens, BIO alignment."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from pipeline.text.ner import decode, trim_offsets
from training.ner.data import generate
from training.ner.tokenizer import IGNORE, LABELS, bio_labels, special_ids, train_tokenizer


@functools.cache
def _tokenizer() -> Tokenizer:
    return train_tokenizer((e.text for e in generate(300, 1)), vocab_size=600)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_round_trips_without_unknown_tokens(text: str) -> None:
    tok = _tokenizer()
    enc = tok.encode(text, add_special_tokens=False)
    assert tok.decode(enc.ids) == text
    assert tok.token_to_id("[UNK]") not in enc.ids


def test_special_tokens_have_ids() -> None:
    assert set(special_ids(_tokenizer())) == {"pad_id", "cls_id", "sep_id"}


def test_labels_follow_the_spans_and_decode_back_to_them() -> None:
    tok = _tokenizer()
    for ex in generate(200, 2):
        enc = tok.encode(ex.text, add_special_tokens=False)
        labels = bio_labels(ex.text, enc.offsets, ex.spans)
        probs = [[0.0] * len(LABELS) for _ in labels]
        for row, lab in zip(probs, labels, strict=True):
            row[0 if lab == IGNORE else lab] = 1.0
        found = decode(np.array(probs).reshape(len(labels), len(LABELS)),
                       trim_offsets(ex.text, enc.offsets), LABELS, 0.5, ex.text)
        assert [(s, e, ent) for s, e, ent, _ in found] == list(ex.spans)


def test_whitespace_tokens_are_ignored() -> None:
    text = "CT  CHEST   John"
    enc = _tokenizer().encode(text, add_special_tokens=False)
    labels = bio_labels(text, enc.offsets, [(12, 16, "NAME")])
    starts = [s for (s, e), lab in zip(trim_offsets(text, enc.offsets), labels, strict=True)
              if lab == LABELS.index("B-NAME")]
    assert starts == [12]
    assert all(lab == IGNORE for (s, e), lab in zip(trim_offsets(text, enc.offsets), labels,
                                                     strict=True) if s == e)


@pytest.mark.parametrize(("text", "value"), [
    ("Tel:+39 0549 555224", "+39 0549 555224"),
    ("Fax #+31(0)727-284636", "+31(0)727-284636"),
    ("call (+33 1 56 56 04 01)", "+33 1 56 56 04 01"),
    ("seen - (0115) 4960444).", "(0115) 4960444"),
])
def test_a_span_starting_inside_a_punctuation_run_decodes_exactly(text: str, value: str) -> None:
    tok = _tokenizer()
    start = text.index(value)
    spans = [(start, start + len(value), "PHONE")]
    enc = tok.encode(text, add_special_tokens=False)
    labels = bio_labels(text, enc.offsets, spans)
    probs = np.zeros((len(labels), len(LABELS)))
    for row, lab in zip(probs, labels, strict=True):
        row[0 if lab == IGNORE else lab] = 1.0
    found = decode(probs, trim_offsets(text, enc.offsets), LABELS, 0.5, text)
    assert [(s, e, ent) for s, e, ent, _ in found] == spans
