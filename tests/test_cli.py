"""The ``veil`` command line: exit statuses, messages, no values unless asked."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from factories import PHI
from test_job import EXPECTED, assert_no_phi, build_tree, ct_bytes

from pipeline import __version__
from pipeline.cli import main
from pipeline.keys import Keyring


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Rich tables wide enough not to wrap values (a wrapped value would hide a leak)."""
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.delenv("VEIL_KEY_FILE", raising=False)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A key file made by ``veil keygen``."""
    path = tmp_path / "veil.key"
    assert main(["keygen", str(path)]) == 0
    return path


def ok_tree(root: Path) -> Path:
    """A folder with two good CT files and one text file."""
    src = root / "ok-src"
    src.mkdir()
    (src / "a.dcm").write_bytes(ct_bytes(seed=1))
    (src / "b.dcm").write_bytes(ct_bytes(seed=2))
    (src / "readme.txt").write_text("not dicom")
    return src


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_deid_clean_run_exits_0_and_prints_a_summary(tmp_path, key_file, capsys):
    src = ok_tree(tmp_path)
    report = tmp_path / "report.json"
    args = ["deid", str(src), "--out", str(tmp_path / "out"), "--profile", "dicom-basic"]
    status = main([*args, "--key-file", str(key_file), "--report", str(report)])
    captured = capsys.readouterr()
    assert status == 0
    assert "dicom-basic" in captured.out
    assert "files/s" in captured.out
    assert "ephemeral" not in captured.err
    data = json.loads(report.read_text())
    assert data["job"]["counts"] == {"ok": 2, "failed": 0, "skipped": 1, "duplicate": 0}
    assert data["job"]["key"]["fingerprint"] == Keyring.from_file(key_file).fingerprint
    assert_no_phi(captured.out + captured.err, "the console")


def test_deid_with_failures_exits_1(tmp_path, key_file, capsys):
    src = build_tree(tmp_path)
    out = tmp_path / "out"
    args = ["deid", str(src), "--out", str(out), "--profile", "dicom-basic"]
    status = main([*args, "--key-file", str(key_file)])
    captured = capsys.readouterr()
    assert status == 1
    assert "failed inputs (3)" in captured.out
    assert "truncated" in captured.out
    assert_no_phi(captured.out + captured.err, "the console")
    ok = [rel for rel, (s, _) in EXPECTED.items() if s == "ok"]
    assert len([p for p in out.rglob("*.dcm")]) == len(ok)


def test_deid_without_key_warns_and_uses_an_ephemeral_key(tmp_path, capsys):
    src = ok_tree(tmp_path)
    report = tmp_path / "r.json"
    args = ["deid", str(src), "--out", str(tmp_path / "o"), "--profile", "dicom-basic"]
    assert main([*args, "--report", str(report), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "not be reproducible" in captured.err
    assert captured.out == ""
    assert json.loads(report.read_text())["job"]["key"]["ephemeral"] is True


def test_deid_key_from_environment(tmp_path, key_file, capsys, monkeypatch):
    monkeypatch.setenv("VEIL_KEY_FILE", str(key_file))
    src = ok_tree(tmp_path)
    args = ["deid", str(src), "--out", str(tmp_path / "o"), "--profile", "dicom-basic", "--quiet"]
    assert main(args) == 0
    assert "reproducible" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--profile", "no-such-profile"], "error"),
        (["--profile", "dicom-basic", "--option", "no-such-option"], "error"),
        (["--profile", "dicom-basic", "--key-file", "{tmp}/missing.key"], "key"),
        (["--profile", "dicom-basic", "--key-file", "{tmp}/short.key"], "key"),
        (["--profile", "dicom-basic", "--report", "{tmp}/out/r.json"], "output folder"),
        (["--profile", "dicom-basic", "--map-file", "{tmp}/out/m.json"], "output folder"),
    ],
    ids=["profile", "option", "missing-key", "short-key", "report-inside", "map-inside"],
)
def test_usage_errors_exit_2_without_traceback(tmp_path, capsys, extra, message):
    (tmp_path / "short.key").write_bytes(b"0123")
    src = ok_tree(tmp_path)
    args = ["deid", str(src), "--out", str(tmp_path / "out")]
    args += [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err.lower()
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.dcm"))


def test_missing_source_and_missing_out_exit_2(tmp_path, capsys):
    args = ["deid", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    assert main([*args, "--profile", "dicom-basic"]) == 2
    assert main(["deid", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_profiles_list(capsys):
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("dicom-basic", "hipaa-safe-harbor", "gdpr", "clinical-trial"):
        assert name in out


def test_profiles_show_prints_resolved_yaml_and_hash(capsys):
    assert main(["profiles", "show", "hipaa-safe-harbor"]) == 0
    out = capsys.readouterr().out
    assert "name: hipaa-safe-harbor" in out
    assert "# content_hash: sha256:" in out


def test_profiles_validate(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("schema_version: 1\nname: mine\nextends: dicom-basic\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: mine\nextends: dicom-basic\nno_such_key: 1\n")
    assert main(["profiles", "validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["profiles", "validate", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:" in out


def test_inspect_masks_values_by_default(tmp_path, capsys):
    path = tmp_path / "ct.dcm"
    path.write_bytes(ct_bytes())
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "PatientName" in out
    assert "D**" in out  # Doe^Johnathan^Q, masked
    assert "yes" in out
    assert_no_phi(out, "inspect output")


def test_inspect_show_values(tmp_path, capsys):
    path = tmp_path / "ct.dcm"
    path.write_bytes(ct_bytes())
    assert main(["inspect", str(path), "--profile", "dicom-basic", "--show-values"]) == 0
    out = capsys.readouterr().out
    assert PHI["PatientID"] in out
    assert PHI["PatientName"] in out


def test_inspect_bad_file_exits_1(tmp_path, capsys):
    path = tmp_path / "x.txt"
    path.write_text("hello")
    assert main(["inspect", str(path)]) == 1
    assert "skipped" in capsys.readouterr().err


def test_keygen_writes_a_private_key_and_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "k"
    assert main(["keygen", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keyring = Keyring.from_file(path)
    assert keyring.fingerprint in capsys.readouterr().out
    before = path.read_bytes()
    assert main(["keygen", str(path)]) == 2
    assert path.read_bytes() == before
    assert main(["keygen", str(tmp_path / "k2")]) == 0
    assert Keyring.from_file(tmp_path / "k2").fingerprint != keyring.fingerprint


def _console_script() -> str:
    """Path of the installed ``veil`` script (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).with_name("veil")
    found = str(beside) if beside.exists() else shutil.which("veil")
    if not found:
        pytest.skip("the veil console script is not installed")
    return found


def test_console_script_runs_a_job(tmp_path, key_file):
    src = ok_tree(tmp_path)
    out = tmp_path / "out"
    cmd = [_console_script(), "deid", str(src), "--out", str(out), "--profile", "dicom-basic"]
    cmd += ["--key-file", str(key_file), "--report", str(tmp_path / "r.json")]
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(list(out.rglob("*.dcm"))) == 2
    assert_no_phi(done.stdout + done.stderr, "the console")
    version = subprocess.run([_console_script(), "--version"], capture_output=True, text=True)
    assert version.returncode == 0
    assert __version__ in version.stdout


def test_demo_de_identifies_the_bundled_samples_and_keeps_key_and_report_outside(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["job"]["counts"]["failed"] == 0
    assert report["job"]["counts"]["ok"] >= 10
    outputs = list((out / "deidentified").rglob("*.dcm"))
    assert len(outputs) == report["job"]["counts"]["ok"]
    assert not list((out / "deidentified").rglob("*.key"))
    assert not list((out / "deidentified").rglob("*.json"))
    # a second run with the same key maps every input to the same output names
    before = sorted(p.relative_to(out) for p in outputs)
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.relative_to(out) for p in (out / "deidentified").rglob("*.dcm")) == before


def test_set_supplies_the_trial_mapping_on_the_command_line(tmp_path, key_file):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.dcm").write_bytes(ct_bytes(seed=1))
    mapping = tmp_path / "map.csv"
    mapping.write_text(f"patient_id,subject_id,site_id\n{PHI['PatientID']},SUBJ-9,SITE-1\n")
    report = tmp_path / "report.json"
    base = ["deid", str(src), "--out", str(tmp_path / "out"), "--profile", "clinical-trial",
            "--key-file", str(key_file), "--report", str(report), "--quiet"]
    assert main(base) == 2  # no mapping: a profile error, nothing processed
    assert main([*base, "--set", f"trial.mapping_csv={mapping}"]) == 2  # no sponsor/protocol
    assert main([*base, "--set", f"trial.mapping_csv={mapping}", "--set",
                 "trial.sponsor_name=Acme", "--set", "trial.protocol_id=P-1"]) == 0
    out = next((tmp_path / "out").rglob("*.dcm"))
    import pydicom

    ds = pydicom.dcmread(out)
    assert ds.PatientID == "SUBJ-9" and ds.ClinicalTrialSiteID == "SITE-1"
    assert main([*base, "--set", "nonsense"]) == 2


@pytest.mark.slow
def test_demo_with_burned_in_text_removal_processes_every_sample(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--profile", "hipaa-safe-harbor-pixels",
                 "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["job"]["counts"]["failed"] == 0
    for entry in report["files"]:
        if entry["status"] != "ok":
            continue
        scanned = any(a["action"] == "clean-pixels" for a in entry["actions"])
        no_pixels = "no pixel data: metadata only" in entry["warnings"]
        assert scanned != no_pixels, entry["source"]  # every image went through the OCR stage
    assert sum(e["status"] == "ok" for e in report["files"]) >= 11
