"""Synthetic NER data: determinism, label/offset alignment, splits and the config."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.text.spans import ENTITIES
from training.ner.config import NerConfigError, load_config
from training.ner.data import (
    _SLOT,
    ENTITY_ORDER,
    SLOT_ENTITY,
    _Maker,
    _mixed,
    data_hash,
    generate,
    make_splits,
    name_like_clinical_words,
    templates,
)

SIZES = {"train": 60, "validation": 20, "test": 30}


def test_same_seed_gives_the_same_examples_and_hash() -> None:
    assert generate(50, 7) == generate(50, 7)
    assert data_hash(make_splits(3, SIZES)) == data_hash(make_splits(3, SIZES))


def test_other_seed_gives_other_data() -> None:
    assert data_hash(make_splits(3, SIZES)) != data_hash(make_splits(4, SIZES))


def test_splits_have_the_requested_sizes_and_no_shared_text_bulk() -> None:
    splits = make_splits(11, SIZES)
    assert {k: len(v) for k, v in splits.items()} == SIZES
    train = {e.text for e in splits["train"]}
    shared = [e for e in splits["test"] if e.text in train and e.spans]
    assert len(shared) <= 2


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_spans_lie_inside_the_text_without_overlap_or_outer_spaces(seed: int) -> None:
    for ex in generate(20, seed):
        last = 0
        for start, end, entity in ex.spans:
            assert 0 <= last <= start < end <= len(ex.text)
            assert entity in ENTITIES
            assert ex.text[start:end] == ex.text[start:end].strip()
            last = end


def test_ocr_strings_carry_ocr_noise() -> None:
    ocr = [e.text for e in generate(600, 5) if e.kind == "ocr"]
    assert any("~" in t for t in ocr)
    assert any(t != t.upper() for t in ocr) and any(t == t.upper() for t in ocr)


def test_clinical_words_that_are_names_appear_unlabelled() -> None:
    words = set(name_like_clinical_words())
    assert {"BAKER", "BELL"} <= words
    found = 0
    for ex in generate(400, 9):
        labelled = {ex.text[s:e].upper() for s, e, _ in ex.spans}
        found += sum(1 for w in ex.text.upper().split() if w in words and w not in labelled)
    assert found > 10


def test_ages_under_ninety_are_never_labelled() -> None:
    for ex in generate(400, 13):
        for start, end, entity in ex.spans:
            if entity == "AGE" and ex.kind != "ocr":  # OCR noise may change digits
                digits = "".join(ch for ch in ex.text[start:end] if ch.isdigit())
                assert int(digits) > 89


@pytest.mark.parametrize("config", [
    {"unknown": 1},
    {"model": {"hidden_size": 4}},
    {"train": {"lr": 0}},
    {"threshold": 1.5},
])
def test_invalid_config_is_refused(config: dict[str, object]) -> None:
    with pytest.raises(NerConfigError):
        load_config(config)


def test_shipped_config_is_valid() -> None:
    cfg = load_config("training/configs/ner.yaml")
    assert cfg.model.max_length == 128


@pytest.mark.slow
def test_data_hash_does_not_depend_on_the_string_hash_seed() -> None:
    code = ("from training.ner.data import data_hash, make_splits; "
            "print(data_hash(make_splits(5, {'train': 150, 'validation': 20, 'test': 20})))")
    hashes = set()
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, timeout=120, env={**os.environ, "PYTHONHASHSEED": seed})
        hashes.add(out.stdout.strip().splitlines()[-1])
    assert len(hashes) == 1


def test_values_of_one_entity_are_never_joined_by_a_bare_space() -> None:
    maker = _Maker(random.Random(21))
    for _ in range(3000):
        template = _mixed(maker)
        slots = [(m, SLOT_ENTITY.get(m.group(1), m.group(1))) for m in _SLOT.finditer(template)]
        for (before, entity), (after, other) in itertools.pairwise(slots):
            if entity == other and entity in ENTITY_ORDER:
                assert template[before.end():after.start()].strip(), entity


@pytest.mark.parametrize(("slot", "may_be_a_city"), [("ADDRESS", False), ("LOCATION", True)])
def test_a_context_free_address_is_never_a_lone_city(slot: str, may_be_a_city: bool) -> None:
    maker = _Maker(random.Random(5))
    cities = {fake.city() for fake in maker.fakers for _ in range(200)}
    values = {maker.value(slot) for _ in range(600)}
    assert bool(values & cities) is may_be_a_city


def test_train_only_templates_leave_validation_and_test_unchanged() -> None:
    plain = make_splits(21, SIZES)
    extra = make_splits(21, {**SIZES, "extra_share": 0.5})
    assert extra["validation"] == plain["validation"]
    assert extra["test"] == plain["test"]
    assert extra["train"] != plain["train"]
    assert generate(40, 8, extra_share=0.0) == generate(40, 8)


def test_no_train_only_template_is_a_held_out_one() -> None:
    tpl = templates()
    heldout = {t for pool in tpl["heldout"].values() for t in pool}
    extra = [t.replace("{LONE}", "{NAME}") for pool in tpl["extra"].values() for t in pool]
    assert extra and not heldout & set(extra)


def test_train_only_templates_label_lone_names_and_leave_scanner_text_unlabelled() -> None:
    examples = [e for e in generate(600, 17, extra_share=1.0)]
    overlay = [e for e in examples if not e.spans and e.kind == "ocr"]
    lone = [e.text[s:t] for e in examples for s, t, entity in e.spans if entity == "NAME"]
    assert len(overlay) > 50 and len(lone) > 100
    assert not any(mark in name for name in lone for mark in ",^.")  # one name, no format
