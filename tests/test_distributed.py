"""The Ray pipeline: serial-identical outputs, killed workers and drivers, resume, cancel.

Ray's gRPC servers listen on every interface and cannot be told otherwise, so the
tests that start Ray run in a private network namespace (only loopback): the
outer test re-runs this file under ``unshare -n`` with ``VEIL_RAY_NETNS=1``.
Tests that need no Ray (journal, sink, report layout) run directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import compiled
from test_job import EXPECTED, build_tree, ct_bytes

from pipeline.cli import main
from pipeline.distributed import (
    DistributedJob,
    JobCancelled,
    JobProgress,
    JournalError,
    RayOptions,
)
from pipeline.distributed.batching import BatchSizer
from pipeline.distributed.journal import Journal
from pipeline.distributed.sink import IdempotentFolderSink
from pipeline.engine import deidentify
from pipeline.io.atomic import TMP_PREFIX
from pipeline.io.reader import read_instance
from pipeline.io.report import (
    FileEntry,
    JobReport,
    UsageError,
    write_report,
    write_report_streaming,
)
from pipeline.io.sinks import DuplicateOutputError
from pipeline.job import run_job

NETNS_ENV = "VEIL_RAY_NETNS"
IN_NETNS = os.environ.get(NETNS_ENV) == "1"
ROOT = Path(__file__).resolve().parent.parent


def outputs(out: Path) -> dict[str, str]:
    """sha256 of every file under ``out``, by relative path."""
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def make_cts(folder: Path, count: int) -> Path:
    """``count`` distinct small CT files."""
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"{i:03d}.dcm").write_bytes(ct_bytes(seed=i))
    return folder


def header(**overrides: object) -> dict[str, object]:
    base = {"profile": "p", "content_hash": "h", "key": "k", "output_dir": "o", "sources": "s",
            "pseudonyms": False}
    return {**base, **overrides}


# ---------------------------------------------------------------------------- no Ray needed


def test_streamed_report_has_the_layout_of_write_report(tmp_path, keyring):
    report = run_job([build_tree(tmp_path)], tmp_path / "out", compiled(), keyring,
                     progress=False)
    for count in (0, 1, len(report.files)):
        part = report.model_copy(update={"files": report.files[:count]})
        write_report(part, tmp_path / "a.json")
        write_report_streaming(tmp_path / "b.json", part.job, iter(part.files))
        as_json = (json.loads(e.model_dump_json()) for e in part.files)
        kept: list[FileEntry] = []
        write_report_streaming(tmp_path / "c.json", part.job, as_json, kept)
        assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
        assert (tmp_path / "a.json").read_bytes() == (tmp_path / "c.json").read_bytes()
        assert kept == part.files


def test_idempotent_sink_accepts_the_same_bytes_and_refuses_others(tmp_path, keyring):
    src = tmp_path / "a.dcm"
    src.write_bytes(ct_bytes(seed=1))
    sink = IdempotentFolderSink(tmp_path / "out")
    first = sink.write(deidentify(read_instance(src), compiled(), keyring))
    again = sink.write(deidentify(read_instance(src), compiled(), keyring))
    assert first == again and len(outputs(tmp_path / "out")) == 1
    other = deidentify(read_instance(src), compiled(), keyring)
    other.dataset.KVP = "99"
    other_sink = IdempotentFolderSink(tmp_path / "out")
    assert other_sink.target(other) == first
    with pytest.raises(DuplicateOutputError):
        other_sink.write(other)
    assert not list((tmp_path / "out").rglob(f"{TMP_PREFIX}*"))


def test_journal_cuts_a_torn_line_and_refuses_another_job(tmp_path):
    state, out = tmp_path / "state", tmp_path / "out"
    journal = Journal(state, out, header(), resume=False, keep_pseudonyms=False)
    journal.record([FileEntry(source="a", status="ok", output="1/2/3.dcm")], [])
    with journal.path.open("a") as handle:
        handle.write('{"type": "file", "entry": {"sou')
    with pytest.raises(UsageError, match="--resume"):
        Journal(state, out, header(), resume=False, keep_pseudonyms=False)
    resumed = Journal(state, out, header(), resume=True, keep_pseudonyms=False)
    assert resumed.done == {"a": ("ok", "1/2/3.dcm", False)}
    assert [e["source"] for e in resumed.iter_entries()] == ["a"]
    with pytest.raises(JournalError, match="key differs"):
        Journal(state, out, header(key="other"), resume=True, keep_pseudonyms=False)


def test_journal_inside_the_output_folder_is_refused(tmp_path):
    with pytest.raises(UsageError):
        Journal(tmp_path / "out" / "state", tmp_path / "out", header(), resume=False,
                keep_pseudonyms=False)


# ---------------------------------------------------------------------------- Ray, in a netns

if not IN_NETNS:

    @pytest.mark.slow
    def test_ray_tests_pass_inside_a_private_network_namespace():
        if shutil.which("unshare") is None or os.geteuid() != 0:
            pytest.skip("creating a network namespace needs unshare and root")
        script = 'ip link set lo up && exec "$0" -m pytest "$1" -q -p no:cacheprovider -x'
        proc = subprocess.run(
            ["unshare", "-n", "sh", "-c", script, sys.executable, __file__],
            env={**os.environ, NETNS_ENV: "1"}, cwd=ROOT, capture_output=True, text=True,
            timeout=400,
        )
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]

else:
    import ray

    @pytest.fixture(scope="module")
    def ray_address():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 object_store_memory=80 * 1024 * 1024, _node_ip_address="127.0.0.1")
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()

    @pytest.fixture(scope="module")
    def cts(tmp_path_factory):
        return make_cts(tmp_path_factory.mktemp("cts") / "src", 24)

    def test_outputs_and_report_entries_match_the_serial_path(ray_address, tmp_path, keyring):
        tree = build_tree(tmp_path)
        (tree / "ct" / "1-copy.dcm").write_bytes((tree / "ct" / "1.dcm").read_bytes())
        serial = run_job([tree], tmp_path / "serial", compiled(), keyring, progress=False)
        job = DistributedJob([tree], tmp_path / "ray", compiled(), keyring,
                             report_path=tmp_path / "r.json",
                             options=RayOptions(workers=2, batch_size=3))
        report = job.run()
        assert outputs(tmp_path / "ray") == outputs(tmp_path / "serial")
        pair = {str(tree / "ct" / "1.dcm"), str(tree / "ct" / "1-copy.dcm")}
        expected = {e.source: e for e in serial.files if e.source not in pair}
        got = {e.source: e for e in report.files if e.source not in pair}
        assert got == expected
        assert sorted(e.status for e in report.files if e.source in pair) == ["duplicate", "ok"]
        assert report.job.counts == serial.job.counts
        written = JobReport.model_validate_json((tmp_path / "r.json").read_text("utf-8"))
        assert written.files == report.files and written.job == report.job
        by_source = {e.source: e for e in report.files}
        for rel, (status, words) in EXPECTED.items():
            entry = by_source[str(tree / rel)]
            if entry.source in pair:
                continue
            assert entry.status == status and words in (entry.reason or ""), rel
        assert (tmp_path / "r.json.state" / "journal.jsonl").is_file()

    def test_progress_counts_add_up(ray_address, tmp_path, keyring, cts):
        seen: list[JobProgress] = []
        DistributedJob([cts], tmp_path / "out", compiled(), keyring,
                       options=RayOptions(workers=2, batch_size=4)).run(seen.append)
        assert seen[0].pending == 24 and seen[-1].pending == 0
        assert all(p.done + p.failed + p.pending == p.total == 24 for p in seen)
        assert [p.done for p in seen] == sorted(p.done for p in seen)
        assert seen[-1].done == 24 and seen[-1].slices_per_s > 0

    @pytest.mark.parametrize(("options", "check"), [
        # metadata-only files take milliseconds: batches grow past the first size
        (RayOptions(workers=2), lambda sizes: max(sizes) > BatchSizer.initial),
        # a target no file can meet: one file a batch once the cost is known
        (RayOptions(workers=2, target_batch_s=1e-9),
         lambda sizes: sizes[1] >= 24 - 2 * 2 * BatchSizer.initial),
        (RayOptions(workers=2, batch_size=3), lambda sizes: set(sizes) <= {3}),
    ])
    def test_batches_are_sized_from_the_measured_cost_unless_fixed(
        ray_address, tmp_path, keyring, cts, options, check
    ):
        job = DistributedJob([cts], tmp_path / "out", compiled(), keyring, options=options)
        report = job.run()
        assert report.job.counts["ok"] == 24
        assert sum(size * n for size, n in job.batch_sizes.items()) == 24
        assert check(job.batch_sizes), dict(job.batch_sizes)

    def test_a_killed_worker_is_replaced_and_every_instance_written_once(
        ray_address, tmp_path, keyring, cts
    ):
        killed: list[int] = []
        job = DistributedJob([cts], tmp_path / "out", compiled(), keyring,
                             options=RayOptions(workers=2, batch_size=2))

        def kill_one(p: JobProgress) -> None:
            if p.processed and not killed:
                pid = ray.get(job.actors[0].pid.remote())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        report = job.run(kill_one)
        assert killed
        assert report.job.counts["ok"] == 24
        assert sorted(outputs(tmp_path / "out")) == sorted(str(e.output) for e in report.files)
        assert len({e.source for e in report.files}) == 24

    def test_a_killed_driver_resumes_with_nothing_lost_or_duplicated(
        ray_address, tmp_path, keyring, cts
    ):
        driver = textwrap.dedent("""
            import os, signal, sys
            from pipeline.distributed import DistributedJob, RayOptions
            from pipeline.keys import Keyring
            from pipeline.profile import compile_profile, load_profile

            def die(p):
                if p.processed >= 6:
                    os.kill(os.getpid(), signal.SIGKILL)

            profile = compile_profile(load_profile("dicom-basic"))
            DistributedJob([sys.argv[1]], sys.argv[2], profile, Keyring(bytes(range(32))),
                           report_path=sys.argv[3], options=RayOptions(workers=2, batch_size=2),
                           ).run(die)
        """)
        out, report_path = tmp_path / "out", tmp_path / "r.json"
        proc = subprocess.run(
            [sys.executable, "-c", driver, str(cts), str(out), str(report_path)],
            env={**os.environ, "RAY_ADDRESS": ray_address}, capture_output=True, timeout=120,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
        journal = (tmp_path / "r.json.state" / "journal.jsonl").read_text().splitlines()
        assert 6 <= len(journal) - 1 < 24 and not report_path.exists()
        with pytest.raises(UsageError, match="--resume"):
            DistributedJob([cts], out, compiled(), keyring, report_path=report_path).run()
        seen: list[JobProgress] = []
        report = DistributedJob([cts], out, compiled(), keyring, report_path=report_path,
                                resume=True, options=RayOptions(workers=2)).run(seen.append)
        assert seen[0].resumed == len(journal) - 1
        assert report.job.counts["ok"] == 24 and len(report.files) == 24
        assert sorted(outputs(out)) == sorted(str(e.output) for e in report.files)
        assert not list(out.rglob(f"{TMP_PREFIX}*"))
        data = json.loads(report_path.read_text("utf-8"))
        assert sorted(f["source"] for f in data["files"]) == sorted(str(p) for p in
                                                                    cts.iterdir())

    def test_cancel_stops_cleanly_and_resume_finishes(ray_address, tmp_path, keyring, cts):
        out = tmp_path / "out"
        job = DistributedJob([cts], out, compiled(), keyring,
                             options=RayOptions(workers=2, batch_size=2))
        with pytest.raises(JobCancelled):
            job.run(lambda p: job.cancel() if p.processed else None)
        journal = Journal(tmp_path / "out.veil-state", out, {}, resume=True,
                          keep_pseudonyms=False)
        ok = {o for s, o, _ in journal.done.values() if s == "ok"}
        assert 0 < len(ok) < 24 and set(outputs(out)) == ok
        report = DistributedJob([cts], out, compiled(), keyring, resume=True).run()
        assert report.job.counts["ok"] == 24
        assert sorted(outputs(out)) == sorted(str(e.output) for e in report.files)


    def test_cli_workers_gives_the_outputs_of_the_serial_cli(ray_address, tmp_path, cts):
        key = tmp_path / "key"
        key.write_text(bytes(range(32)).hex())
        common = [str(cts), "--profile", "dicom-basic", "--key-file", str(key), "--quiet"]
        assert main(["deid", *common, "--out", str(tmp_path / "a")]) == 0
        ray_args = ["--out", str(tmp_path / "b"), "--workers", "2", "--report",
                    str(tmp_path / "r.json")]
        assert main(["deid", *common, *ray_args]) == 0
        assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
        assert main(["deid", *common, "--out", str(tmp_path / "c"), "--resume"]) == 2

    @pytest.mark.parametrize("options", [["clean-pixel-data"]])
    def test_workers_build_pixel_engines_and_match_the_serial_path(
        ray_address, tmp_path, keyring, options
    ):
        src = tmp_path / "src"
        src.mkdir()
        for i in range(2):
            (src / f"{i}.dcm").write_bytes(ct_bytes(rows=64, columns=64, seed=i))
        profile = compiled("dicom-basic", *options)
        serial = run_job([src], tmp_path / "a", profile, keyring, progress=False)
        report = DistributedJob([src], tmp_path / "b", profile, keyring,
                                options=RayOptions(workers=1)).run()
        assert outputs(tmp_path / "b") == outputs(tmp_path / "a")
        assert sorted(report.files, key=lambda e: e.source) == serial.files
        assert report.job.models == serial.job.models

    def test_a_worker_that_cannot_load_its_models_stops_the_job_before_any_file(
        ray_address, tmp_path, keyring
    ):
        src = tmp_path / "src"
        src.mkdir()
        (src / "0.dcm").write_bytes(ct_bytes(rows=64, columns=64, seed=0))
        job = DistributedJob([src], tmp_path / "out", compiled("dicom-basic", "clean-pixel-data"),
                             keyring, options=RayOptions(workers=1),
                             engines_factory=_unloadable_engines)
        with pytest.raises(UsageError, match="could not load the models"):
            job.run()
        assert outputs(tmp_path / "out") == {}


def _unloadable_engines(compiled: object) -> object:
    """An engines factory whose model bundle fails its check (as a corrupted one does)."""
    from pipeline.registry import RegistryError

    raise RegistryError("text-detector: model.onnx fails its sha256 check")
