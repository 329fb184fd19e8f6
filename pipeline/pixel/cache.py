"""Read each distinct crop once: a bounded cache in front of a text recognizer.

The frames of a cine loop and the slices of a series carry the same overlay lines (name,
ID, date, institution) at the same place, drawn with the same pixels. A recognizer's
result depends only on the crop it reads (the CPU batching of
:class:`~pipeline.pixel.ppocr.PPOCRRecognizer` gives one-at-a-time results), so a crop
whose pixels were read before is not read again: :class:`CachedRecognizer` keys its
results by the sha256 of the crop's shape, type and bytes, exactly, never by similarity.

The cache lives in the memory of the process that runs the recognizer and holds
recognised text, which may be PHI: it is never logged, written or returned except as the
result of the same crop, holds at most ``max_entries`` results (least recently used
first out), and :meth:`CachedRecognizer.clear` empties it. ``pixel.read_cache`` in a
profile sets its size; 0 turns it off.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np

from pipeline.pixel.types import Recognition, TextBox, TextRecognizer

__all__ = ["CachedRecognizer", "caches_of", "crop_key", "with_read_cache"]


def crop_key(image: np.ndarray, box: TextBox) -> bytes:
    """The sha256 digest of the crop ``box`` of ``image``: shape, dtype and pixels."""
    crop = np.ascontiguousarray(image[box.y0:box.y1, box.x0:box.x1])
    digest = hashlib.sha256(f"{crop.shape}|{crop.dtype.str}|".encode())
    digest.update(crop.data)
    return digest.digest()


class CachedRecognizer:
    """A :class:`~pipeline.pixel.types.TextRecognizer` that reads each distinct crop once.

    Parameters
    ----------
    inner : TextRecognizer
        The recognizer that reads the crops not seen before (all of them in one call).
    max_entries : int
        Most results kept (at least 1).

    Attributes
    ----------
    hits, misses : int
        Crops answered from the cache and crops read, since creation or :meth:`clear`.
    """

    def __init__(self, inner: TextRecognizer, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("a read cache holds at least one entry")
        self.inner = inner
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, Recognition] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def members(self) -> tuple[TextRecognizer]:
        """The recognizer behind the cache (its models are the ones run)."""
        return (self.inner,)

    @property
    def model_ref(self) -> object:
        """The inner recognizer's model reference (None when it has none)."""
        return getattr(self.inner, "model_ref", None)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every cached result and reset the counters."""
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0

    def recognize(self, image: np.ndarray, boxes: list[TextBox]) -> list[Recognition]:
        """One result per box: cached ones as they were read, the others read now (each
        distinct crop once, in one call to the inner recognizer)."""
        keys = [crop_key(image, box) for box in boxes]
        results: list[Recognition | None] = [None] * len(boxes)
        first: dict[bytes, int] = {}  # crops to read: key -> index of its first box
        with self._lock:
            for index, key in enumerate(keys):
                found = self._entries.get(key)
                if found is not None:
                    self._entries.move_to_end(key)
                    results[index] = found
                    self.hits += 1
                elif key not in first:
                    first[key] = index
        new: dict[bytes, Recognition] = {}
        if first:
            read = self.inner.recognize(image, [boxes[i] for i in first.values()])
            new = dict(zip(first, read, strict=True))
            with self._lock:
                self.misses += len(new)
                self.hits += sum(1 for i, key in enumerate(keys)
                                 if results[i] is None and first[key] != i)  # repeats
                for key, text in new.items():
                    self._entries[key] = text
                    self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return [found if found is not None else new[key]
                for found, key in zip(results, keys, strict=True)]


def caches_of(engine: object) -> list[CachedRecognizer]:
    """The read caches in ``engine`` and its ``members``, outermost first."""
    found = [engine] if isinstance(engine, CachedRecognizer) else []
    for member in getattr(engine, "members", ()) or ():
        found.extend(caches_of(member))
    return found


def with_read_cache(recognizer: TextRecognizer, size: int) -> TextRecognizer:
    """``recognizer`` behind a :class:`CachedRecognizer` of ``size`` entries, or as it
    is when ``size`` is 0 (``pixel.read_cache``: off)."""
    return CachedRecognizer(recognizer, size) if size > 0 else recognizer
