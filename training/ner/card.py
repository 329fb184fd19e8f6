"""The NER bundle's ``metadata.json`` and ``README.md`` model card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from training.ner.config import NerConfig
from training.ner.data import ENTITY_ORDER
from training.ner.tokenizer import LABELS, special_ids

_INTENDED_USE = (
    "Find PHI in short DICOM free text (descriptions, comments, reasons for study, "
    "additional history, SR text, protocol names) and in OCR output of burned-in "
    "annotations, beside Veil's rule-based taggers (header values, patterns, name "
    "dictionary). Recall on NAME, ID and DATE matters more than precision."
)
_LIMITS = [
    "Trained only on synthetic text (Faker values in templates); real clinical text differs.",
    "English-centred templates; names, places and phone numbers from 11 Faker locales.",
    "Ages are PHI only above 89; the model learnt this from examples, not a rule.",
    "Training texts are short (99% under 60 tokens): long texts are read in overlapping "
    "64-token windows; paragraphs were not trained on.",
    "It does not see the header: the header-value tagger stays in front of it.",
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_bundle_files(out_dir: Path, cfg: NerConfig, tokenizer: Tokenizer,
                       params: dict[str, Any], scores: dict[str, Any], data_hash: str,
                       facts: dict[str, Any]) -> dict[str, Any]:
    """Write ``metadata.json`` and ``README.md`` for the files already in ``out_dir``."""
    import torch
    import transformers

    window = min(cfg.model.window, cfg.model.max_length - 2)
    metadata: dict[str, Any] = {
        "schema": "veil-model-bundle/1",
        "name": "phi-ner",
        "registered_name": cfg.name,
        "version": cfg.version,
        "task": "token-classification",
        "description": "Small BERT token classifier (BIO) for PHI in DICOM free text and OCR "
                       "strings, trained from scratch on seeded synthetic data.",
        "license": "Apache-2.0",
        "inputs": {
            "input_ids": {"dtype": "int64", "shape": ["batch", "sequence"]},
            "attention_mask": {"dtype": "int64", "shape": ["batch", "sequence"]},
        },
        "outputs": {"logits": {"dtype": "float32", "shape": ["batch", "sequence", len(LABELS)],
                               "notes": "softmax over labels; label 0 is O"}},
        "labels": list(LABELS),
        "entities": list(ENTITY_ORDER),
        "preprocessing": {
            "tokenizer": "tokenizer.json",
            "type": "byte-level BPE, each punctuation mark a token of its own",
            "add_special_tokens": "manually: [CLS] ids [SEP]",
            "max_length": cfg.model.max_length, "window": window,
            "window_stride": window // 2,
            **special_ids(tokenizer),
        },
        "postprocessing": {"threshold": cfg.threshold,
                           "method": "tokens of one word (touching letters or digits) take "
                                     "their mean probabilities; token is PHI when 1 - P(O) >= "
                                     "threshold; entity = argmax of P(B-X) + P(I-X); span "
                                     "starts on B or new entity"},
        "architecture": {"class": "BertForTokenClassification", **cfg.model.model_dump(),
                         "vocab_size": tokenizer.get_vocab_size(),
                         "parameters": params["parameters"]},
        "training": {"seed": cfg.seed, "data_seed": cfg.data.seed, "data_hash": data_hash,
                     "sizes": cfg.data.model_dump(exclude={"seed"}), **facts,
                     "torch": torch.__version__, "transformers": transformers.__version__},
        "metrics": scores,
        "sha256": {name: _sha256(out_dir / name) for name in ("model.onnx", "tokenizer.json")},
        "intended_use": _INTENDED_USE,
        "known_limits": _LIMITS,
    }
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", "utf-8")
    (out_dir / "README.md").write_text(_card(metadata), "utf-8")
    return metadata


def _table(scores: dict[str, dict[str, float]]) -> list[str]:
    rows = ["| entity | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for entity, row in scores.items():
        rows.append(f"| {entity} | {row['precision']:.4f} | {row['recall']:.4f} | "
                    f"{row['f1']:.4f} | {int(row['support'])} |")
    return rows


def _card(meta: dict[str, Any]) -> str:
    arch, train = meta["architecture"], meta["training"]
    lines = [
        f"# phi-ner {meta['version']}: PHI named-entity model", "",
        meta["description"], "",
        "## Intended use", "", meta["intended_use"], "",
        "Loaded by `pipeline.text.ner.NerTagger` (ONNX Runtime + tokenizers only) and used "
        "beside the rules when a profile sets `text.ner: true`.", "",
        "## Model", "",
        f"- {arch['class']}: {arch['num_layers']} layers, hidden {arch['hidden_size']}, "
        f"{arch['num_heads']} heads, {arch['parameters']} parameters, max length "
        f"{arch['max_length']} tokens.",
        f"- Byte-level BPE tokenizer ({arch['vocab_size']} tokens) trained on the training "
        "split only; no unknown tokens; each punctuation mark is a token of its own, so a "
        "span may start or end at any mark (`Tel:+39...`).",
        f"- Labels: BIO over {', '.join(meta['entities'])} ({len(meta['labels'])} labels).",
        f"- ONNX single file, opset per config; ONNX Runtime vs PyTorch max abs logit "
        f"difference {train.get('parity_max_abs_diff', float('nan')):.2e}.", "",
        "## Data", "",
        "Synthetic, seeded (`training/ner/data.py`, templates and vocabularies in "
        "`training/ner/data/`): DICOM study / series descriptions, protocol names, comments, "
        "reasons for study, additional history, SR text, and OCR-style burned-in annotation "
        "strings with OCR noise (`^` read as `~`, dropped spaces, 0/O 1/l/I 5/S 8/B "
        "confusions, case changes). Values from Faker; clinical words that are also names "
        "(eponyms, vocabulary of `pipeline.text.vocabulary`) appear as negatives; ages of "
        "89 and under appear as negatives. A place with no key or context before it is a "
        "street or full address, never a lone city (Faker makes many cities from "
        "surnames), and two values of one entity are never joined by a bare space."
        + (f" {train['sizes']['extra_share']:.0%} of the training split comes from "
           "train-only templates (`extra` in `templates.yaml`: scanner overlay text such as "
           "probe names and scan parameters as negatives, lone given names and surnames); "
           "validation and test never use them."
           if train["sizes"].get("extra_share") else ""),
        f"Sizes {train['sizes']}; data seed {train['data_seed']} (validation +1, test +2, "
        "test also uses held-out templates); data sha256 `" + train["data_hash"] + "`.", "",
        "## Training", "",
        f"Seed {train['seed']}, {train['steps']} steps, {train['epochs_run']} epochs, stop: "
        f"{train['stop']}, {train['train_seconds']} s on {train['device']} (torch "
        f"{train['torch']}, transformers {train['transformers']}). Reproduce: "
        "`veil train ner --config training/configs/ner.yaml` or "
        "`python -c \"from training.ner.train import run; run('training/configs/ner.yaml', "
        "Path('out'))\"`.", "",
        "## Metrics", "",
        "Entity-level exact character spans. Test: held-out split measured through the ONNX "
        "runtime tagger (sliding windows; the tokens of one word are decoded together).", "",
    ]
    for split in ("test", "validation"):
        if split in meta["metrics"]:
            lines += [f"### {split}", "", *_table(meta["metrics"][split]), ""]
    lines += ["## Limitations", "", *(f"- {x}" for x in meta["known_limits"]), ""]
    return "\n".join(lines)
