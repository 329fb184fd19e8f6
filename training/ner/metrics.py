"""Entity-level exact-span precision, recall and F1 (per entity and micro), and the
redaction recall: gold spans whose characters all fall inside some predicted span."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

Span = tuple[int, int, str]


def entity_scores(
    gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]]
) -> dict[str, dict[str, float]]:
    """Per-entity and ``micro`` precision, recall, F1 and support.

    A predicted span counts only when start, end and entity all equal a gold span
    of the same text. An entity without gold and predicted spans is left out.
    """
    if len(gold) != len(pred):
        raise ValueError("gold and predictions need one entry per text")
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for g_spans, p_spans in zip(gold, pred, strict=True):
        g, p = set(g_spans), set(p_spans)
        for s in g & p:
            tp[s[2]] += 1
        for s in p - g:
            fp[s[2]] += 1
        for s in g - p:
            fn[s[2]] += 1
    out = {e: _prf(tp[e], fp[e], fn[e]) for e in sorted(set(tp) | set(fp) | set(fn))}
    out["micro"] = _prf(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return out


def covered_recall(
    texts: Sequence[str], gold: Sequence[Iterable[Span]], pred: Sequence[Iterable[Span]]
) -> dict[str, dict[str, float]]:
    """Per-entity and ``micro`` share of gold spans whose every non-space character lies
    inside a predicted span of any entity (what a scrubber would remove): a span found
    with another type, or split in two, still counts; one cut short does not.
    """
    if not len(texts) == len(gold) == len(pred):
        raise ValueError("texts, gold and predictions need one entry per text")
    hit: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for text, g_spans, p_spans in zip(texts, gold, pred, strict=True):
        inside = [False] * len(text)
        for start, end, _ in p_spans:
            inside[start:end] = [True] * (end - start)
        for start, end, entity in g_spans:
            total[entity] += 1
            hit[entity] += all(inside[i] for i in range(start, end) if not text[i].isspace())
    out = {e: {"recall": hit[e] / total[e], "support": float(total[e])} for e in sorted(total)}
    n = sum(total.values())
    out["micro"] = {"recall": sum(hit.values()) / n if n else 0.0, "support": float(n)}
    return out


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": float(tp + fn)}


def flatten(scores: dict[str, dict[str, float]], prefix: str) -> dict[str, float]:
    """``{prefix}_{entity}_{metric}`` flat dict (MLflow metric names)."""
    return {f"{prefix}_{e}_{m}": v for e, row in scores.items() for m, v in row.items()}
