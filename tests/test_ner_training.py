"""NER training on a tiny configuration: loss goes down, export matches PyTorch, bundle."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipeline.text.ner import NerTagger
from training.ner.data import generate
from training.ner.model import build_model, collate, export_onnx, parity
from training.ner.tokenizer import encode, special_ids, train_tokenizer
from training.ner.train import lr_factor, run

TINY_MODEL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
              "dropout": 0.0}
TINY = {"data": {"train": 200, "validation": 24, "test": 24}, "tokenizer": {"vocab_size": 400},
        "model": {**TINY_MODEL, "max_length": 64},
        "train": {"epochs": 1, "batch_size": 16, "max_steps": 6, "log_every": 2}}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core machine more threads are much slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_few_training_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    examples = generate(64, 3)
    tok = train_tokenizer((e.text for e in examples), vocab_size=400)
    batch = collate(encode(tok, examples, 64), special_ids(tok)["pad_id"])
    model = build_model(tok.get_vocab_size(), TINY_MODEL, 64, seed=0)
    optim = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(15):
        loss = model(**batch).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_onnx_export_matches_pytorch(tmp_path: Path) -> None:
    examples = generate(40, 4)
    tok = train_tokenizer((e.text for e in examples), vocab_size=400)
    model = build_model(tok.get_vocab_size(), TINY_MODEL, 64, seed=1).eval()
    export_onnx(model, tmp_path / "m.onnx")
    rng = random.Random(0)
    rows = encode(tok, rng.sample(examples, 12), 64)  # several lengths: padding and masking
    assert parity(model, tmp_path / "m.onnx", collate(rows, special_ids(tok)["pad_id"])) < 1e-4


@pytest.mark.slow
def test_run_writes_a_loadable_bundle_with_metrics(tmp_path: Path) -> None:
    result = run(TINY, tmp_path)
    meta = json.loads((tmp_path / "metadata.json").read_text())
    assert {p.name for p in tmp_path.iterdir()} >= {"model.onnx", "tokenizer.json",
                                                     "metadata.json", "README.md"}
    assert meta["training"]["data_hash"] == result.data_hash
    assert "micro" in meta["metrics"]["test"]
    assert result.metrics["parity_max_abs_diff"] < 1e-4
    assert any("loss" in h for h in result.history)
    assert "## Limitations" in result.model_card.read_text()
    tagger = NerTagger(tmp_path)
    assert all(isinstance(spans, tuple) for spans in tagger.tag_many(["CT CHEST", ""]))


@pytest.mark.parametrize(("step", "time_used", "expected"), [
    (0, 0.0, 0.1),      # warm-up: (step + 1) / warmup
    (9, 0.0, 1.0),      # end of warm-up
    (55, 0.0, 0.5),     # half the decay steps left, time to spare
    (55, 0.8, 0.2),     # the time budget runs out first
    (100, 0.1, 0.0),    # all steps done
    (30, 1.5, 0.0),     # time spent: never negative
])
def test_learning_rate_decays_by_steps_or_time_whichever_ends_first(
    step: int, time_used: float, expected: float
) -> None:
    assert lr_factor(step, 100, 10, time_used) == pytest.approx(expected)
