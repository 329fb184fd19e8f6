"""Train the PHI NER model and write its bundle (``veil train ner --config FILE``).

Steps: synthetic splits, tokenizer on the training split, seeded training with early
stopping on validation micro F1, single-file ONNX export with a parity check against
PyTorch, held-out test metrics measured through the runtime tagger, metadata and card.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.text.ner import NerTagger, decode, trim_offsets
from training.ner.card import write_bundle_files
from training.ner.config import NerConfig, load_config
from training.ner.data import Example, data_hash, make_splits
from training.ner.metrics import entity_scores, flatten
from training.ner.model import NerExportError, build_model, collate, export_onnx, parity
from training.ner.tokenizer import LABELS, encode, special_ids, train_tokenizer
from training.result import TrainResult

logger = logging.getLogger(__name__)

Rows = list[tuple[list[int], list[int]]]


def _batches(rows: Rows, size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of indices, each of rows of similar length (less padding)."""
    order = list(range(len(rows)))
    rng.shuffle(order)
    chunk = size * 50
    out: list[list[int]] = []
    for lo in range(0, len(order), chunk):
        part = sorted(order[lo:lo + chunk], key=lambda i: len(rows[i][0]))
        out.extend(part[k:k + size] for k in range(0, len(part), size))
    rng.shuffle(out)
    return out


def predict_spans(model: Any, tokenizer: Any, examples: Sequence[Example], cfg: NerConfig,
                  device: torch.device) -> list[list[tuple[int, int, str]]]:
    """Spans the PyTorch model finds (texts cut to the model window)."""
    ids = special_ids(tokenizer)
    width = cfg.model.max_length - 2
    encs = tokenizer.encode_batch([e.text for e in examples], add_special_tokens=False)
    model.eval()
    out: list[list[tuple[int, int, str]]] = []
    with torch.no_grad():
        for lo in range(0, len(examples), 64):
            chunk = encs[lo:lo + 64]
            rows: Rows = [([ids["cls_id"], *e.ids[:width], ids["sep_id"]], []) for e in chunk]
            batch = collate(rows, ids["pad_id"])
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            for k, enc in enumerate(chunk):
                n = min(len(enc.ids), width)
                text = examples[lo + k].text
                offsets = trim_offsets(text, enc.offsets[:n])
                found = decode(probs[k, 1:n + 1], offsets, LABELS, cfg.threshold, text)
                out.append([(s, e, ent) for s, e, ent, _ in found])
    return out


def lr_factor(step: int, total: int, warmup: int, time_used: float) -> float:
    """Learning-rate factor: linear warm-up, then linear decay to 0 at ``total`` steps or
    when the time budget is spent (``time_used`` reaches 1), whichever comes first.

    A run cut by ``max_minutes`` on a busy machine so still ends with a small rate.
    """
    left = min((total - step) / max(1, total - warmup), 1.0 - time_used)
    return min((step + 1) / warmup, max(0.0, left))


def _fit(model: Any, train_rows: Rows, val: Sequence[Example], tokenizer: Any,
         cfg: NerConfig, device: torch.device) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Train with early stopping; load the best weights; return history and run facts."""
    tc = cfg.train
    rng = random.Random(cfg.seed)
    pad = special_ids(tokenizer)["pad_id"]
    steps_per_epoch = (len(train_rows) + tc.batch_size - 1) // tc.batch_size
    total = steps_per_epoch * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    warmup = max(1, int(total * tc.warmup_ratio))
    optim = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    started, budget = time.monotonic(), tc.max_minutes * 60

    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: lr_factor(s, total, warmup, (time.monotonic() - started) / budget))
    history: list[dict[str, float]] = []
    best: tuple[float, dict[str, torch.Tensor] | None] = (-1.0, None)
    bad, step, stop = 0, 0, ""
    running: list[float] = []
    every = tc.eval_every or steps_per_epoch
    for epoch in range(tc.epochs):
        for idx in _batches(train_rows, tc.batch_size, rng):
            model.train()
            batch = {k: v.to(device) for k, v in collate([train_rows[i] for i in idx],
                                                          pad).items()}
            loss = model(**batch).loss
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            step += 1
            running.append(loss.item())
            if step % tc.log_every == 0:
                history.append({"step": float(step), "loss": float(np.mean(running))})
                logger.info("step %d loss %.4f", step, history[-1]["loss"])
                running = []
            if step >= total:
                stop = "max steps"
            if time.monotonic() - started > budget:
                stop = "time limit"
            if step % every == 0 or stop:
                f1 = entity_scores([e.spans for e in val],
                                   predict_spans(model, tokenizer, val, cfg, device))["micro"]["f1"]
                history.append({"step": float(step), "epoch": float(epoch), "val_micro_f1": f1})
                logger.info("step %d epoch %d validation micro F1 %.4f", step, epoch, f1)
                if f1 > best[0]:
                    best = (f1, {k: v.detach().clone() for k, v in model.state_dict().items()})
                    bad = 0
                else:
                    bad += 1
                    if bad >= tc.patience:
                        stop = stop or "early stopping"
            if stop:
                break
        if stop:
            break
    if best[1] is not None:
        model.load_state_dict(best[1])
    facts = {"steps": step, "epochs_run": epoch + 1, "stop": stop or "epochs",
             "train_seconds": round(time.monotonic() - started, 1), "best_val_f1": best[0]}
    return history, facts


def run(config: dict[str, Any] | str | Path, out_dir: Path) -> TrainResult:
    """Train, export and evaluate the NER model; write its bundle into ``out_dir``."""
    cfg = load_config(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.train.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    splits = make_splits(cfg.data.seed, cfg.data.model_dump())
    digest = data_hash(splits)
    tokenizer = train_tokenizer((e.text for e in splits["train"]), cfg.tokenizer.vocab_size,
                                cfg.tokenizer.min_frequency)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    train_rows = encode(tokenizer, splits["train"], cfg.model.max_length)
    model: Any = build_model(tokenizer.get_vocab_size(), cfg.model.model_dump(),
                             cfg.model.max_length, cfg.seed)
    model.to(device)
    history, facts = _fit(model, train_rows, splits["validation"], tokenizer, cfg, device)
    val_scores = entity_scores([e.spans for e in splits["validation"]],
                               predict_spans(model, tokenizer, splits["validation"], cfg,
                                             device))
    model = model.cpu().eval()
    onnx_path = out_dir / "model.onnx"
    export_onnx(model, onnx_path, cfg.export.opset)
    check = encode(tokenizer, splits["validation"][:16], cfg.model.max_length)
    diff = parity(model, onnx_path, collate(check, special_ids(tokenizer)["pad_id"]))
    if diff >= cfg.export.parity_tolerance:
        raise NerExportError(f"ONNX / PyTorch logit difference {diff:.2e} is over tolerance")
    params = _params(cfg, tokenizer.get_vocab_size(), sum(p.numel() for p in model.parameters()))
    facts.update(parity_max_abs_diff=diff, device=device.type)
    write_bundle_files(out_dir, cfg, tokenizer, params, {}, digest, facts)
    tagger = NerTagger(out_dir, threshold=cfg.threshold)
    test = splits["test"]
    test_scores = entity_scores([e.spans for e in test],
                                [[(s, e, ent) for s, e, ent, _ in found]
                                 for found in tagger.predict([e.text for e in test])])
    scores = {"validation": val_scores, "test": test_scores}
    write_bundle_files(out_dir, cfg, tokenizer, params, scores, digest, facts)
    metrics = {**flatten(val_scores, "val"), **flatten(test_scores, "test"),
               "parity_max_abs_diff": diff}
    logger.info("NER test micro F1 %.4f", test_scores["micro"]["f1"])
    return TrainResult(model_name=cfg.name, bundle_dir=out_dir, params=params, metrics=metrics,
                       data_seed=cfg.data.seed, data_hash=digest, history=history)


def _params(cfg: NerConfig, vocab_size: int, n_params: int) -> dict[str, Any]:
    flat: dict[str, Any] = {"seed": cfg.seed, "threshold": cfg.threshold,
                            "vocab_size_actual": vocab_size, "parameters": n_params}
    for section in ("data", "tokenizer", "model", "train", "export"):
        for key, value in getattr(cfg, section).model_dump().items():
            flat[f"{section}.{key}"] = value
    return flat
