"""Throughput of free-text tagging: rules alone against rules + NER model (texts/s).

Run: ``python -m training.ner.bench [--count N] [--bundle DIR]``. Both taggers read the
same synthetic texts (held-out test generator, seed 99) in the same process, so the
ratio holds on a busy machine; absolute figures do not.
"""

from __future__ import annotations

import argparse
import time

from pipeline.text import CompositeTagger, HeaderContext, default_tagger
from pipeline.text.ner import NerTagger
from pipeline.text.tagger import PhiTagger
from training.ner.data import generate


def _rate(tagger: PhiTagger, texts: list[str], context: HeaderContext) -> float:
    started = time.perf_counter()
    for text in texts:
        tagger.tag(text, context)
    return len(texts) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    """Print texts/s of the rules, the model alone (one by one and batched) and both."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--bundle", default=None)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    args = parser.parse_args(argv)
    texts = [e.text for e in generate(args.count, 99, heldout=True)]
    context = HeaderContext()
    rules = default_tagger()
    model = NerTagger(args.bundle, intra_op_num_threads=args.threads)
    both = CompositeTagger([*rules.taggers, model])
    for tagger in (rules, model):  # warm up: vocabularies, ONNX session
        tagger.tag(texts[0], context)
    rates = {"rules": _rate(rules, texts, context), "model": _rate(model, texts, context),
             "rules+model": _rate(both, texts, context)}
    started = time.perf_counter()
    model.tag_many(texts, context)
    rates["model batched (tag_many)"] = len(texts) / (time.perf_counter() - started)
    print(f"{len(texts)} synthetic texts, mean {sum(map(len, texts)) / len(texts):.0f} chars, "
          f"ONNX Runtime threads {args.threads}")
    for name, rate in rates.items():
        print(f"{name:26s} {rate:9.1f} texts/s  ({rate / rates['rules']:.3f} x rules)")


if __name__ == "__main__":
    main()
