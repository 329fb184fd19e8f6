"""The scaffolding the pixel benchmarks share (benchmarks/pixelrun.py) and its metrics."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import pixel_metrics as pm
from benchmarks import pixelrun
from training.pixel_corpus import load_or_generate

COUNT, SEED = 2, 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixelrun-corpus")
    return root, load_or_generate(root, COUNT, SEED)


@pytest.fixture(scope="module")
def veil():
    return pixelrun.VeilRun()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    pixelrun.add_corpus_arguments(parser)
    pixelrun.add_output_arguments(parser)
    return parser


@pytest.mark.parametrize(("argv", "expected"), [
    ([], {"count": 60, "seed": 7, "split": "test", "corpus": None, "out": None,
          "no_tesseract": False, "settings": []}),
    (["--count", "3", "--seed", "1", "--split", "all", "--corpus", "c", "--out", "o",
      "--no-tesseract", "--set", "text.ner=true", "--set", "pixel.margin=2"],
     {"count": 3, "seed": 1, "split": "all", "corpus": Path("c"), "out": Path("o"),
      "no_tesseract": True, "settings": ["text.ner=true", "pixel.margin=2"]}),
])
def test_common_flags_parse_to_the_benchmarks_defaults(argv, expected):
    assert vars(_parser().parse_args(argv)) == expected


def test_set_flags_reach_the_profile_veil_runs():
    args = _parser().parse_args(["--set", "text.ner=true", "--set", "pixel.margin=2"])
    assert pixelrun.settings_of(args) == {"text.ner": "true", "pixel.margin": "2"}
    run = pixelrun.VeilRun(overrides=pixelrun.settings_of(args))
    assert run.compiled.profile.text.ner is True and run.margin == 2


@pytest.mark.parametrize("pair", ["text.ner", "=true"])
def test_a_malformed_set_flag_is_a_clear_error(pair):
    with pytest.raises(pixelrun.BenchmarkError, match=r"SECTION\.KEY=VALUE"):
        pixelrun.settings_of(_parser().parse_args(["--set", pair]))


@pytest.mark.parametrize(("split", "expected"), [("all", COUNT), ("test", None)])
def test_load_split_reuses_the_corpus_and_filters_the_split(corpus, split, expected):
    root, manifest = corpus
    args = _parser().parse_args(["--count", str(COUNT), "--seed", str(SEED), "--split", split,
                                 "--corpus", str(root)])
    got_root, got_manifest, files = pixelrun.load_split(args)
    assert got_root == root and got_manifest == manifest
    wanted = [f for f in manifest["files"] if split in ("all", f["split"])]
    assert files == wanted and (expected is None or len(files) == expected)


@pytest.mark.parametrize("name", pixelrun.DETECTORS)
def test_every_named_detector_is_built_and_finds_nothing_on_a_blank_view(veil, name):
    detector = pixelrun.make_detector(name, veil.settings)
    assert list(detector.detect(np.zeros((64, 96, 3), dtype=np.uint8))) == []


def test_unknown_detector_is_a_clear_error(veil):
    with pytest.raises(pixelrun.BenchmarkError, match="unknown text detector"):
        pixelrun.make_detector("no-such-detector", veil.settings)


@pytest.mark.slow
def test_a_file_run_writes_the_output_and_its_mask_covers_the_phi(corpus, veil, tmp_path):
    root, manifest = corpus
    entry = manifest["files"][0]
    target = tmp_path / "out.dcm"
    done = veil.run(root / entry["name"], target)
    assert done.shape == (entry["rows"], entry["columns"])
    assert done.total_s == pytest.approx(done.read_s + done.deid_s + done.write_s)
    assert min(done.read_s, done.deid_s, done.write_s) >= 0
    written = pydicom.dcmread(target)
    assert written.SOPInstanceUID == done.result.dataset.SOPInstanceUID
    mask = veil.mask(done)
    score = pm.LineScore()
    score.add(entry["lines"], mask)
    covered, total = score.recall()
    assert total == sum(line["phi"] for line in entry["lines"]) and covered > 0
    # the runner form writes the same file and returns the same mask
    again = veil(root / entry["name"], tmp_path / "again.dcm")
    assert np.array_equal(again, mask)
    # each file is timed cold: the second run read every crop again
    assert veil.read_cache_cell().startswith("read cache 0/")
    veil.fresh_cache = False
    try:
        veil.run(root / entry["name"])
        hits, asked = map(int, veil.read_cache_cell().split()[2].split("/"))
        assert hits > 0 and asked == 2 * hits  # a kept cache answers the repeat
    finally:
        veil.fresh_cache = True
    assert pm.header_leaks(target, entry["phi_strings"]) == []


@pytest.mark.slow
def test_stage_clock_times_every_stage_and_changes_no_result(corpus, veil, monkeypatch):
    from pipeline.pixel import stage

    for name, _ in pixelrun.STAGE_STEPS:  # restored after the test
        monkeypatch.setattr(stage, name, getattr(stage, name))
    root, manifest = corpus
    path = root / manifest["files"][1]["name"]
    plain = veil.run(path)
    clock = pixelrun.StageClock()
    timed = veil.with_engines(clock.instrument(veil.engines))
    assert timed.compiled is veil.compiled and timed.keyring is veil.keyring
    done = timed.run(path)
    assert {"decode", "detect", "recognise", "tag"} <= set(clock.spent)
    assert all(seconds >= 0 for seconds in clock.spent.values())
    assert sum(clock.spent.values()) <= done.deid_s
    assert np.array_equal(timed.mask(done), veil.mask(plain))


def test_attempt_counts_a_crash_and_times_a_success(tmp_path):
    tally = pixelrun.Tally()
    target = tmp_path / "t.dcm"
    target.write_bytes(b"stale")

    def crash(source: Path, out: Path) -> np.ndarray:
        raise ValueError("boom")

    mask, seconds, note = pixelrun.attempt(crash, tmp_path / "s.dcm", target, (4, 6), tally)
    assert not mask.any() and mask.shape == (4, 6)
    assert note == "FAILED ValueError: boom" and not target.exists()
    assert tally.failures_cell() == "ValueError x1" and tally.seconds == [seconds]

    def fill(source: Path, out: Path) -> np.ndarray:
        return np.ones((4, 6), dtype=bool)

    mask, seconds, note = pixelrun.attempt(fill, tmp_path / "s.dcm", target, (4, 6), tally)
    assert mask.all() and note is None and tally.seconds[-1] == seconds
    assert sum(tally.failures.values()) == 1


def test_tables_print_one_column_per_contender(capsys):
    rows = [("recall", ["0.5", "1.0"]), *pixelrun.reocr_rows(1, [0, 2], 4, "values")]
    pixelrun.print_table(["Veil", "Presidio"], rows)
    assert capsys.readouterr().out.splitlines() == [
        "| metric | Veil | Presidio |",
        "|---|---|---|",
        "| recall | 0.5 | 1.0 |",
        "| PHI values Tesseract reads in the original (positive control) "
        "| 0.250 (1/4) | 0.250 (1/4) |",
        "| PHI values Tesseract still reads after redaction (leak rate) "
        "| 0.000 (0/4) | 0.500 (2/4) |",
    ]


def _line(box, phi, entity="NAME"):
    return {"box": box, "phi": phi, "entity": entity}


@pytest.mark.parametrize(("filled", "hits", "lenient", "nonphi_hit", "outside"), [
    ((0, 0, 0, 0), 0, 0, 0, 0),                # nothing redacted
    ((0, 0, 10, 2), 1, 1, 0, 0),               # exactly the PHI line
    ((0, 0, 5, 2), 0, 1, 0, 0),                # half of it: lenient only
    ((0, 0, 20, 10), 1, 1, 1, 200 - 20 - 20),  # everything
])
def test_line_score_counts_lines_and_area(filled, hits, lenient, nonphi_hit, outside):
    mask = np.zeros((10, 20), dtype=bool)
    x0, y0, x1, y1 = filled
    mask[y0:y1, x0:x1] = True
    score = pm.LineScore()
    lines = [_line((0, 0, 10, 2), True), _line((0, 5, 10, 7), False, "OVERLAY")]
    shares = score.add(lines, mask)
    assert score.recall() == (hits, 1) and score.lenient == lenient
    assert (score.nonphi_hit, score.nonphi_n) == (nonphi_hit, 1)
    assert (score.outside, score.area) == (outside, 200)
    assert score.mean_coverage() == f"{shares[0]:.3f}"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 15), st.integers(1, 8),
                          st.integers(1, 8), st.booleans()), min_size=1, max_size=6),
       st.integers(0, 2**32 - 1))
def test_line_score_stays_within_its_counts(boxes, seed):
    mask = np.random.default_rng(seed).random((24, 24)) < 0.5
    lines = [_line((x, y, x + w, y + h), phi) for x, y, w, h, phi in boxes]
    score = pm.LineScore()
    shares = score.add(lines, mask)
    covered, total = score.recall()
    assert all(0.0 <= s <= 1.0 for s in shares) and len(shares) == len(lines)
    assert covered <= score.lenient <= total == sum(phi for *_, phi in boxes)
    assert score.nonphi_hit <= score.nonphi_n == len(lines) - total
    assert 0 <= score.outside <= int(mask.sum()) and score.area == mask.size


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(30, 40), (700, 650)]))
def test_ocr_image_rescales_once_so_a_full_range_frame_is_kept(seed, shape):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)
    frame.flat[0], frame.flat[1] = 0, 255
    wide = frame.astype(np.uint16) * 16  # the same picture stored on 12 bits
    once = pm.ocr_image(frame)
    assert np.array_equal(once, pm.ocr_image(wide))
    small = min(shape) < 600
    assert once.shape == ((2 * shape[0], 2 * shape[1]) if small else shape)
    if not small:
        assert np.array_equal(once, frame)


@pytest.mark.parametrize(("text", "expected"), [
    ("SMITH and 12-34", 2), ("nothing here", 0), ("john smith", 1)])
def test_readable_count_reads_values_and_names(text, expected):
    lines = [{"phi": True, "entity": "NAME", "value": "SMITH^JOHN"},
             {"phi": True, "entity": "ID", "text": "1234"},
             {"phi": False, "entity": "OVERLAY", "value": "SMITH"}]
    assert pm.readable_count(lines, text) == expected


@pytest.mark.slow
def test_bench_pixel_runs_end_to_end_on_a_tiny_corpus(corpus, tmp_path):
    root, manifest = corpus
    argv = [sys.executable, "-m", "benchmarks.bench_pixel", "--count", str(COUNT), "--seed",
            str(SEED), "--split", "all", "--corpus", str(root), "--out", str(tmp_path),
            "--no-tesseract"]
    done = subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    n_phi = sum(line["phi"] for f in manifest["files"] for line in f["lines"])
    assert "| PHI box recall (>= 95% of pixels redacted) | " in done.stdout
    assert f"/{n_phi}) |" in done.stdout and "| files with header PHI leaks | 0/2 |" in done.stdout
    assert sorted(p.name for p in tmp_path.glob("*.dcm")) == sorted(
        f["name"] for f in manifest["files"])
