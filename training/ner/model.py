"""The token-classification transformer: local config, batching, ONNX export and parity."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import BertConfig, BertForTokenClassification

from training.ner.tokenizer import IGNORE, LABELS

logger = logging.getLogger(__name__)


class NerExportError(RuntimeError):
    """The ONNX export failed or does not match PyTorch."""


def build_model(vocab_size: int, settings: dict[str, Any], max_length: int, seed: int
                ) -> BertForTokenClassification:
    """A freshly initialised BERT token classifier from a local config (no hub)."""
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=settings["hidden_size"],
        num_hidden_layers=settings["num_layers"], num_attention_heads=settings["num_heads"],
        intermediate_size=settings["intermediate_size"], max_position_embeddings=max_length,
        hidden_dropout_prob=settings["dropout"], attention_probs_dropout_prob=settings["dropout"],
        id2label=dict(enumerate(LABELS)),
        label2id={lab: i for i, lab in enumerate(LABELS)}, type_vocab_size=1,
    )
    config._attn_implementation = "eager"
    return BertForTokenClassification(config)


def collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int
            ) -> dict[str, torch.Tensor]:
    """Pad ``(ids, labels)`` rows to the longest one: input_ids, attention_mask, labels."""
    length = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for i, (tok, lab) in enumerate(rows):
        ids[i, :len(tok)] = torch.tensor(tok)
        mask[i, :len(tok)] = 1
        labels[i, :len(lab)] = torch.tensor(lab)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class _Logits(torch.nn.Module):
    def __init__(self, model: BertForTokenClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model: BertForTokenClassification, path: Path, opset: int = 17) -> None:
    """Export ``model`` to one ONNX file: inputs input_ids, attention_mask; output logits.

    Batch and sequence axes are dynamic.
    """
    wrapper = _Logits(model.cpu()).eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    mask = torch.ones((2, 16), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", (UserWarning, DeprecationWarning, FutureWarning))
            torch.onnx.export(
                wrapper, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                output_names=["logits"], dynamic_axes=axes, opset_version=opset, dynamo=False,
                do_constant_folding=True,
            )
    except Exception as exc:  # the exporter raises many types
        raise NerExportError(f"ONNX export failed ({type(exc).__name__})") from exc


def parity(model: BertForTokenClassification, onnx_path: Path,
           batch: dict[str, torch.Tensor]) -> float:
    """Max absolute logit difference between ONNX Runtime (CPU) and PyTorch on ``batch``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapper = _Logits(model.cpu()).eval()
    with torch.no_grad():
        expected = wrapper(batch["input_ids"], batch["attention_mask"]).numpy()
    (got,) = session.run(["logits"], {"input_ids": batch["input_ids"].numpy(),
                                      "attention_mask": batch["attention_mask"].numpy()})
    return float(np.max(np.abs(np.asarray(got) - expected)))
