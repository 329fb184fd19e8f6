"""Entity-level exact-span precision / recall / F1 on hand-made cases."""

from __future__ import annotations

import pytest

from training.ner.metrics import covered_recall, entity_scores, flatten

N, D = "NAME", "DATE"


@pytest.mark.parametrize(("gold", "pred", "entity", "expected"), [
    ([[(0, 4, N)]], [[(0, 4, N)]], N, (1.0, 1.0, 1.0)),
    ([[(0, 4, N)]], [[(0, 3, N)]], N, (0.0, 0.0, 0.0)),  # boundary off by one: no credit
    ([[(0, 4, N)]], [[(0, 4, D)]], N, (0.0, 0.0, 0.0)),  # right span, wrong entity
    ([[(0, 4, N), (5, 9, N)]], [[(0, 4, N)]], N, (1.0, 0.5, 2 / 3)),
    ([[(0, 4, N)]], [[(0, 4, N), (6, 8, N)]], N, (0.5, 1.0, 2 / 3)),
    ([[(0, 4, N)], [(1, 3, N)]], [[], [(1, 3, N)]], N, (1.0, 0.5, 2 / 3)),
    ([[(0, 4, N), (5, 9, D)]], [[(0, 4, N), (5, 9, D)]], "micro", (1.0, 1.0, 1.0)),
    ([[(0, 4, N), (5, 9, D)]], [[(0, 4, N)]], "micro", (1.0, 0.5, 2 / 3)),
    ([[(0, 4, N)], [(0, 2, D)]], [[(0, 4, N)], [(0, 2, N)]], "micro", (0.5, 0.5, 0.5)),
])
def test_scores_match_hand_counts(gold: list, pred: list, entity: str,
                                  expected: tuple[float, float, float]) -> None:
    row = entity_scores(gold, pred)[entity]
    assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(expected)


def test_no_predictions_give_zero_not_an_error() -> None:
    row = entity_scores([[(0, 1, N)]], [[]])
    assert row[N]["precision"] == 0.0 and row[N]["support"] == 1.0


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per text"):
        entity_scores([[]], [])


def test_flatten_names_each_metric() -> None:
    flat = flatten(entity_scores([[(0, 1, N)]], [[(0, 1, N)]]), "test")
    assert flat["test_NAME_f1"] == 1.0 and flat["test_micro_recall"] == 1.0


@pytest.mark.parametrize(("pred", "expected"), [
    ([(0, 10, N)], 1.0),                  # exact
    ([(0, 10, D)], 1.0),                  # another entity still removes it
    ([(0, 4, N), (5, 10, N)], 1.0),       # split at the space: every letter is inside
    ([(0, 15, N)], 1.0),                  # over-long
    ([(0, 9, N)], 0.0),                   # the last letter left out
    ([(1, 10, N)], 0.0),                  # the first letter left out
    ([], 0.0),
])
def test_covered_recall_counts_a_value_only_when_every_letter_is_inside(pred, expected):
    text = "JOHN SMITH was here"  # the gold name is text[0:10]
    assert covered_recall([text], [[(0, 10, N)]], [pred])[N]["recall"] == expected


def test_covered_recall_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="one entry per text"):
        covered_recall(["a"], [[]], [])


def test_evaluate_prints_one_row_per_entity_and_micro(tmp_path, capsys):
    import yaml

    from training.ner import evaluate

    config = tmp_path / "ner.yaml"
    config.write_text(yaml.safe_dump({"data": {"test": 40}}), encoding="utf-8")
    evaluate.main(["--config", str(config)])
    out = capsys.readouterr().out
    assert "40 held-out test texts" in out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    assert rows[0][0].strip() == "entity" and rows[-1][0].strip() == "micro"
    values = [float(cell) for row in rows[2:] for cell in row[2:]]
    assert values and all(0.0 <= v <= 1.0 for v in values)
    micro = [float(cell) for cell in rows[-1][2:]]
    assert micro[3] >= micro[1] > micro[2]  # rules + model cover at least the model
