"""The byte-level BPE tokenizer (trained on the training split) and BIO label alignment.

Byte-level BPE has every byte in its alphabet, so OCR noise and unusual characters
never turn into unknown tokens. Every punctuation mark is a token of its own: the
byte-level rule alone keeps runs such as ``:+`` or ``#+`` in one token, so a span that
starts inside the run (``Tel:+39 ...``) could never be tagged exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline.text.ner import trim_offsets
from training.ner.data import ENTITY_ORDER, Example

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[CLS]", "[SEP]", "[UNK]")
#: Label names: ``O`` then ``B-X`` and ``I-X`` per entity.
LABELS: tuple[str, ...] = ("O", *(f"{p}-{e}" for e in ENTITY_ORDER for p in ("B", "I")))
IGNORE = -100
#: One punctuation or symbol character (neither space, letter nor digit).
_PUNCT = r"[^\s\p{L}\p{N}]"


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``texts``."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_PUNCT), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    """Ids of the padding, start and end tokens (``pad_id``, ``cls_id``, ``sep_id``)."""
    ids = {name: tokenizer.token_to_id(tok)
           for name, tok in (("pad_id", "[PAD]"), ("cls_id", "[CLS]"), ("sep_id", "[SEP]"))}
    if any(v is None for v in ids.values()):
        raise ValueError("tokenizer lacks its special tokens")
    return {k: int(v) for k, v in ids.items() if v is not None}


def bio_labels(text: str, offsets: Sequence[tuple[int, int]],
               spans: Sequence[tuple[int, int, str]]) -> list[int]:
    """Label index per token: ``B-X`` on a span's first token, ``I-X`` inside, else ``O``.

    Whitespace-only tokens get :data:`IGNORE`.
    """
    out = []
    started: set[int] = set()
    for start, end in trim_offsets(text, offsets):
        if start >= end:
            out.append(IGNORE)
            continue
        label = "O"
        for k, (s, e, entity) in enumerate(spans):
            if s <= start < e:
                label = f"{'I' if k in started else 'B'}-{entity}"
                started.add(k)
                break
        out.append(LABELS.index(label))
    return out


def encode(tokenizer: Tokenizer, examples: Sequence[Example], max_length: int,
           ) -> list[tuple[list[int], list[int]]]:
    """``([CLS] ids [SEP], labels)`` per example, cut to ``max_length`` tokens."""
    ids = special_ids(tokenizer)
    encs = tokenizer.encode_batch([e.text for e in examples], add_special_tokens=False)
    out = []
    for ex, enc in zip(examples, encs, strict=True):
        labels = bio_labels(ex.text, enc.offsets, ex.spans)[:max_length - 2]
        tokens = [ids["cls_id"], *enc.ids[:max_length - 2], ids["sep_id"]]
        out.append((tokens, [IGNORE, *labels, IGNORE]))
    return out
