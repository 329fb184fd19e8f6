"""The transformer PHI NER tagger on ONNX Runtime (``models/phi-ner``).

Only ONNX Runtime, ``tokenizers`` and numpy are used at run time (never torch or
transformers). The bundle folder holds ``model.onnx``, ``tokenizer.json`` and
``metadata.json``; both files are checked against the sha256 digests of the metadata.
Texts longer than the window of the metadata (the lengths seen in training, shorter
than the model's maximum) are read in overlapping windows; a token read by several
windows is taken from the window where it lies farthest from an edge. The session is opened lazily,
so a tagger pickles cheaply (Ray workers open their own).

Tagged text is PHI: it is returned to the caller and never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.pixel.ppocr import ModelBundleError, make_session
from pipeline.text.context import HeaderContext
from pipeline.text.spans import PhiSpan

if TYPE_CHECKING:
    from pipeline.registry import ModelRef

logger = logging.getLogger(__name__)

#: Name of the shipped bundle under ``models/``.
NER_BUNDLE = "phi-ner"
_FILES = ("model.onnx", "tokenizer.json")

Offsets = Sequence[tuple[int, int]]
_LEAD = frozenset("([{<\"'")
_TRAIL = frozenset(")]}>\"'.,;:")
#: Separators that never begin or end a PHI value (a URL may end with ``/``).
_SEPARATORS = frozenset("/|\\~=#-_*!?")
_PAIRS = {"(": ")", "[": "]", "{": "}", "<": ">", ")": "(", "]": "[", "}": "{", ">": "<"}


def trim_offsets(text: str, offsets: Offsets) -> list[tuple[int, int]]:
    """Token offsets without surrounding whitespace; whitespace-only tokens become empty."""
    out = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        out.append((start, end))
    return out


def decode(
    probs: np.ndarray, offsets: Offsets, labels: Sequence[str], threshold: float, text: str
) -> list[tuple[int, int, str, float]]:
    """Turn per-token BIO probabilities into ``(start, end, entity, confidence)`` spans.

    Parameters
    ----------
    probs
        ``(tokens, labels)`` probabilities; label 0 is ``O``.
    offsets
        Trimmed character offsets of the tokens (empty ones are skipped).
    labels
        ``O``, then ``B-X`` / ``I-X`` names.
    threshold
        A token is PHI when ``1 - P(O)`` reaches it; the entity is the one whose
        ``B`` + ``I`` probability is highest, a new span starts on ``B`` or a new entity.
    text
        The tagged text: unpaired brackets and quotes are cut from span starts and
        ends, ``.,;:`` from span ends, and separators (``/|~=#-_*!?`` and backslash)
        from both, except a URL's closing ``/``; spans left empty are dropped. Tokens of one
        word (touching, letter to letter or digit to digit) are read as one: their mean
        probabilities, so a span never starts or ends inside a word.
    """
    entities = sorted({lab[2:] for lab in labels if lab != "O"})
    b_idx = np.array([labels.index(f"B-{e}") for e in entities])
    i_idx = np.array([labels.index(f"I-{e}") for e in entities])
    probs = _pool_words(np.asarray(probs), offsets, text, b_idx, i_idx, threshold)
    out: list[tuple[int, int, str, float]] = []
    current: list[Any] | None = None  # [start, end, entity, scores]
    for row, (start, end) in zip(probs, offsets, strict=True):
        if start >= end:
            continue
        phi = 1.0 - float(row[0])
        if phi < threshold:
            if current is not None:
                out.append(_close(current))
                current = None
            continue
        scores = row[b_idx] + row[i_idx]
        k = int(np.argmax(scores))
        begins = row[b_idx[k]] > row[i_idx[k]]
        if current is not None and current[2] == entities[k] and not begins:
            current[1] = end
            current[3].append(phi)
            continue
        if current is not None:
            out.append(_close(current))
        current = [start, end, entities[k], [phi]]
    if current is not None:
        out.append(_close(current))
    return [span for span in (_strip(text, *found) for found in out) if span is not None]


def _pool_words(probs: np.ndarray, offsets: Offsets, text: str, b_idx: np.ndarray,
                i_idx: np.ndarray, threshold: float) -> np.ndarray:
    """Give the tokens of each word their mean reading (B on the first token only).

    A word none of whose tokens reaches ``threshold`` stays as it is (it is not PHI
    either way).
    """
    hot = (probs[:, 0] <= 1.0 - threshold).tolist() if len(probs) else []
    words: list[list[int]] = []
    last = -1
    for k, (start, end) in enumerate(offsets):
        if start >= end:
            continue
        glued = start == last and start > 0 and (
            (text[start - 1].isalpha() and text[start].isalpha())
            or (text[start - 1].isdigit() and text[start].isdigit()))
        if glued:
            words[-1].append(k)
        else:
            words.append([k])
        last = end
    out = probs
    for word in words:
        if len(word) < 2 or not any(hot[k] for k in word):
            continue
        if out is probs:
            out = probs.copy()
        mean = probs[word].mean(axis=0)
        best = int(np.argmax(mean[b_idx] + mean[i_idx]))
        first = probs[word[0]]
        phi = 1.0 - float(mean[0])
        b_share = first[b_idx[best]] / max(float(first[b_idx[best]] + first[i_idx[best]]), 1e-12)
        rows = np.zeros((len(word), probs.shape[1]), dtype=probs.dtype)
        rows[:, 0] = mean[0]
        rows[:, i_idx[best]] = phi
        rows[0, b_idx[best]] = phi * b_share
        rows[0, i_idx[best]] = phi * (1.0 - b_share)
        out[word] = rows
    return out


def _unpaired(span: str, char: str) -> bool:
    """True when the bracket ``char`` has no partner inside ``span`` (other marks: always)."""
    pair = _PAIRS.get(char)
    if pair is None:
        return True
    opening, closing = (char, pair) if char in "([{<" else (pair, char)
    return span.count(opening) != span.count(closing)


def _strip(text: str, start: int, end: int, entity: str, conf: float
           ) -> tuple[int, int, str, float] | None:
    keep_end = "/" if entity == "URL" else ""
    while start < end and (text[start].isspace() or text[start] in _SEPARATORS or (
            text[start] in _LEAD and _unpaired(text[start:end], text[start]))):
        start += 1
    while end > start and (text[end - 1].isspace() or (
            text[end - 1] in _SEPARATORS and text[end - 1] not in keep_end) or (
            text[end - 1] in _TRAIL and _unpaired(text[start:end], text[end - 1]))):
        end -= 1
    return (start, end, entity, conf) if start < end else None


def _close(current: list[Any]) -> tuple[int, int, str, float]:
    return int(current[0]), int(current[1]), str(current[2]), float(np.mean(current[3]))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def bundle_dir(bundle: str | Path | None = None) -> Path:
    """The folder of ``bundle`` (a path), else ``phi-ner`` by registry alias or shipped."""
    if bundle is not None:
        return Path(bundle)
    from pipeline.registry import resolve_bundle

    return resolve_bundle(NER_BUNDLE).path


def bundle_ref(bundle: str | Path | None = None) -> ModelRef:
    """The resolved bundle (provenance): the folder ``bundle``, else ``phi-ner`` by
    registry alias or shipped.

    Raises
    ------
    ModelBundleError
        When the folder ``bundle`` is not a complete bundle or fails its sha256 check.
    """
    from pipeline.registry import RegistryError, folder_ref, resolve_bundle

    if bundle is None:
        return resolve_bundle(NER_BUNDLE)
    try:
        return folder_ref(Path(bundle))
    except RegistryError as exc:
        raise ModelBundleError(f"NER bundle is not usable: {exc}") from exc


def load_metadata(folder: Path) -> dict[str, Any]:
    """Read ``metadata.json`` and check the sha256 of the model and the tokenizer files.

    Raises
    ------
    ModelBundleError
        When a file is missing or unreadable, or a digest does not match.
    """
    try:
        metadata: dict[str, Any] = json.loads((folder / "metadata.json").read_text("utf-8"))
        for name in _FILES:
            digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            if digest != metadata["sha256"][name]:
                raise ModelBundleError(
                    f"NER bundle {folder.name!r}: sha256 of {name} is {digest}, "
                    f"expected {metadata['sha256'][name]}"
                )
    except (OSError, KeyError, ValueError) as exc:
        raise ModelBundleError(
            f"NER bundle {folder.name!r} is not usable ({type(exc).__name__})"
        ) from exc
    logger.debug("NER bundle %s verified", folder.name)
    return metadata


class NerTagger:
    """PHI tagger backed by the token-classification model of a bundle.

    Parameters
    ----------
    bundle
        Bundle folder; the shipped ``models/phi-ner`` when None.
    threshold
        Minimum ``1 - P(O)`` of a token to be PHI (0 to 1).
    batch_size
        Windows per ONNX Runtime call.
    intra_op_num_threads
        ONNX Runtime threads (its default when None).
    """

    source = "model"
    #: Highest confidence of a model span: below the header-value tagger's (0.99), so a
    #: span both find keeps the header's entity and source when spans are merged.
    max_confidence = 0.95

    def __init__(
        self, bundle: str | Path | None = None, *, threshold: float = 0.5, batch_size: int = 32,
        intra_op_num_threads: int | None = None,
    ) -> None:
        if not 0 < threshold < 1:
            raise ValueError("threshold must lie between 0 and 1")
        #: Which model this is (shipped files, a registry version by alias, or a folder).
        self.model_ref = bundle_ref(bundle)
        self.folder = self.model_ref.path
        self.metadata = load_metadata(self.folder)
        self.threshold = threshold
        self.batch_size = batch_size
        self.intra_op_num_threads = intra_op_num_threads
        prep = self.metadata["preprocessing"]
        self.labels: list[str] = list(self.metadata["labels"])
        self.max_length = int(prep["max_length"])
        self.window = min(int(prep.get("window", self.max_length - 2)), self.max_length - 2)
        self.stride = max(1, int(prep.get("window_stride", self.window // 2)))
        self._session: Any = None
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_session"] = None
        state["_tokenizer"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _load(self) -> tuple[Any, Any]:
        if self._session is None:
            from tokenizers import Tokenizer

            load_metadata(self.folder)  # the files may have changed since construction
            self._tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            self._session = make_session((self.folder / "model.onnx").read_bytes(),
                                         self.intra_op_num_threads)
        return self._session, self._tokenizer

    def tag(self, text: str, context: HeaderContext) -> tuple[PhiSpan, ...]:
        """Return the PHI spans the model finds in ``text`` (``context`` is not used)."""
        return self.tag_many([text], context)[0]

    def tag_many(
        self, texts: Sequence[str], context: HeaderContext | None = None, *,
        thresholds: Sequence[float | None] | None = None,
    ) -> list[tuple[PhiSpan, ...]]:
        """Tag several texts in batched ONNX Runtime calls; one tuple of spans per text.

        ``thresholds`` gives each text its own threshold (None: the tagger's).
        """
        return [
            tuple(PhiSpan(s, e, ent, min(conf, self.max_confidence), self.source)
                  for s, e, ent, conf in found)
            for found in self.predict(texts, thresholds)
        ]

    def predict(
        self, texts: Sequence[str], thresholds: Sequence[float | None] | None = None
    ) -> list[list[tuple[int, int, str, float]]]:
        """``(start, end, entity, confidence)`` spans per text."""
        probs, offsets = self.token_probs(texts)
        limits = [self.threshold if t is None else t
                  for t in (thresholds if thresholds is not None else [None] * len(texts))]
        return [decode(p, o, self.labels, limit, t)
                for p, o, t, limit in zip(probs, offsets, texts, limits, strict=True)]

    def token_probs(
        self, texts: Sequence[str]
    ) -> tuple[list[np.ndarray], list[list[tuple[int, int]]]]:
        """Per-text token probabilities ``(tokens, labels)`` and trimmed token offsets."""
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        width = self.window
        windows: list[tuple[int, int, list[int]]] = []  # (text index, first token, ids)
        for i, enc in enumerate(encodings):
            ids = enc.ids
            if not ids:
                continue
            starts = range(0, max(len(ids) - width, 0) + self.stride, self.stride)
            for first in starts:
                windows.append((i, first, ids[first:first + width]))
                if first + width >= len(ids):
                    break
        probs_out = [np.zeros((len(enc.ids), len(self.labels)), np.float32) for enc in encodings]
        # each token keeps the reading of the window where it lies farthest from an edge
        margin = [np.full(len(enc.ids), -1, np.int64) for enc in encodings]
        order = sorted(range(len(windows)), key=lambda w: len(windows[w][2]))
        for lo in range(0, len(order), self.batch_size):
            chunk = [windows[w] for w in order[lo:lo + self.batch_size]]
            probs = _softmax(self._run(session, [ids for _, _, ids in chunk]))
            for (i, first, ids), row in zip(chunk, probs, strict=True):
                pos = np.arange(len(ids))
                edge = np.minimum(pos, len(ids) - 1 - pos)
                if first == 0:
                    edge = len(ids) - 1 - pos  # the text's own start is no window edge
                if first + len(ids) == len(margin[i]):
                    edge = np.maximum(edge, pos) if first else np.full(len(ids), len(ids))
                span = slice(first, first + len(ids))
                better = edge > margin[i][span]
                probs_out[i][span][better] = row[1:len(ids) + 1][better]
                margin[i][span] = np.maximum(margin[i][span], edge)
        offsets = [trim_offsets(t, e.offsets) for t, e in zip(texts, encodings, strict=True)]
        return probs_out, offsets

    def _run(self, session: Any, batch: list[list[int]]) -> np.ndarray:
        prep = self.metadata["preprocessing"]
        cls, sep, pad = prep["cls_id"], prep["sep_id"], prep["pad_id"]
        length = max(len(ids) for ids in batch) + 2
        input_ids = np.full((len(batch), length), pad, dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=np.int64)
        for row, ids in enumerate(batch):
            seq = [cls, *ids, sep]
            input_ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
        (logits,) = session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})
        return np.asarray(logits, dtype=np.float32)
