"""Held-out scores of a PHI NER bundle: the model alone and with the rules beside it.

Run: ``python -m training.ner.evaluate [--bundle DIR] [--config FILE]``. The test split
is the one the training config makes (same seed and size, so the same texts as the
model card's). Printed per entity: exact-span recall of the model (the model card's
metric) and the redaction recall (:func:`~training.ner.metrics.covered_recall`: every
character of the PHI value inside a tagged span, of any type) of the model, of the
rules alone (header-free: the texts have no DICOM header) and of the rules + model, as
``text.ner: true`` runs them.
"""

from __future__ import annotations

import argparse

from pipeline.text import CompositeTagger, HeaderContext, default_tagger
from pipeline.text.ner import NerTagger
from training.ner.config import load_config
from training.ner.data import generate
from training.ner.metrics import covered_recall, entity_scores


def main(argv: list[str] | None = None) -> None:
    """Print the table described in the module notes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=None, help="bundle folder (default: shipped)")
    parser.add_argument("--config", default="training/configs/ner.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    test = generate(cfg.data.test, cfg.data.seed + 2, heldout=True)
    texts = [e.text for e in test]
    gold = [list(e.spans) for e in test]
    model = NerTagger(args.bundle)
    context = HeaderContext()
    rules = default_tagger()
    found = {
        "model": [[(s.start, s.end, s.entity) for s in spans]
                  for spans in model.tag_many(texts, context)],
        "rules": [[(s.start, s.end, s.entity) for s in rules.tag(t, context)] for t in texts],
    }
    both = CompositeTagger([*rules.taggers, model])
    found["rules+model"] = [[(s.start, s.end, s.entity) for s in both.tag(t, context)]
                            for t in texts]
    exact = entity_scores(gold, found["model"])
    covered = {name: covered_recall(texts, gold, spans) for name, spans in found.items()}
    print(f"{len(texts)} held-out test texts (seed {cfg.data.seed + 2}); bundle "
          f"{model.model_ref.name} {model.model_ref.version}")
    print("| entity | support | model exact recall | model covered | rules covered "
          "| rules+model covered |")
    print("|---|---:|---:|---:|---:|---:|")
    for entity in [e for e in exact if e != "micro"] + ["micro"]:
        cells = [f"{covered[name].get(entity, {}).get('recall', 0.0):.4f}" for name in found]
        print(f"| {entity} | {exact[entity]['support']:.0f} | {exact[entity]['recall']:.4f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
