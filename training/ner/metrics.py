"""Entity-level exact-span precision, recall and F1 (per entity and micro)."""

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


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": float(tp + fn)}


def flatten(scores: dict[str, dict[str, float]], prefix: str) -> dict[str, float]:
    """``{prefix}_{entity}_{metric}`` flat dict (MLflow metric names)."""
    return {f"{prefix}_{e}_{m}": v for e, row in scores.items() for m, v in row.items()}
