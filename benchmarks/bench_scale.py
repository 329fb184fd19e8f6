"""Scaling and cost curve of the Ray pipeline (issue 5), metadata-only.

(a) Scaling, on one generated corpus in one run: the single-process path
(``pipeline.job.run_job``), then the Ray pipeline with 1 and with 2 worker
actors; every job writes its outputs and its JSON report. Ray is started
once, before any timing; each Ray job's time includes its actors' start, the
journal and the streamed report. Printed: slices/s (a slice
is one instance), the time until the first batch came back (the actors' start),
the scaling efficiency ``rate(2) / (2 * rate(1))`` and the overhead of Ray
against the serial path ``rate(serial) / rate(Ray, 1 worker)``.

(b) Cost curve: Ray jobs of growing size (default 1k and 10k instances) with
``keep_entries=False``. Printed: wall time, time per 1k instances, and peak
resident memory of the driver and of the workers (summed), sampled every 0.2 s
from /proc (workers are found by their process title ``ray::InstanceWorker``).

Instances are small (8x8 pixels, ~40 header elements with synthetic PHI) and
generated fast by patching fixed-width UIDs into one template's bytes.
Ray binds every interface: run it in a private network namespace, either with
``--netns`` (re-executes under ``unshare -n``; root) or by hand:
``unshare -n sh -c 'ip link set lo up && .venv/bin/python -m benchmarks.bench_scale'``.

Ray batches are sized as the job runs (the default), and with ``--fixed 16 ...`` also
at fixed sizes, each with 1 and 2 workers, in the same run.

Run ``python -m benchmarks.bench_scale --netns [--count 2000] [--sizes 1000 10000]``;
for 100k: ``python -m benchmarks.bench_scale --netns --skip-scaling --sizes 100000``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

NETNS_ENV = "VEIL_BENCH_NETNS"
#: Fixed-width placeholders patched per instance: (marker, instances per value).
MARKERS = {
    "study": ("1.2.3.4.5.1.1111111111", 200),
    "series": ("1.2.3.4.5.2.1111111111", 50),
    "frame": ("1.2.3.4.5.4.1111111111", 50),
    "sop": ("1.2.3.4.5.3.1111111111", 1),
    "patient": ("PID1111111111", 400),
}


def template() -> bytes:
    """One small CT instance whose UIDs and patient ID are the markers."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(MARKERS["sop"][0])
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = MARKERS["sop"][0]
    ds.StudyInstanceUID = MARKERS["study"][0]
    ds.SeriesInstanceUID = MARKERS["series"][0]
    ds.FrameOfReferenceUID = MARKERS["frame"][0]
    ds.PatientID = MARKERS["patient"][0]
    ds.PatientName = "Synthetic^Patient^Q"
    ds.PatientBirthDate = "19450316"
    ds.PatientSex = "F"
    ds.PatientAddress = "42 Example Street, Springfield"
    ds.AccessionNumber = "ACC24681357"
    ds.InstitutionName = "Example General Hospital"
    ds.ReferringPhysicianName = "Doctor^Example"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240105"
    ds.StudyTime = "101500"
    ds.StudyID = "S12345"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "AXIAL 1.25MM"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.DeviceSerialNumber = "SN-99812"
    ds.StationName = "CTROOM1"
    ds.SliceThickness = "1.25"
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(64, dtype=np.uint16).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def generate(folder: Path, count: int) -> Path:
    """Write ``count`` distinct instances into ``folder`` (100 per subfolder)."""
    base = template()
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        data = base
        for marker, per in MARKERS.values():
            value = marker[: -10] + str(1_000_000_000 + i // per)
            data = data.replace(marker.encode(), value.encode())
        sub = folder / f"{i // 100:05d}"
        if i % 100 == 0:
            sub.mkdir(exist_ok=True)
        (sub / f"{i:07d}.dcm").write_bytes(data)
    return folder


def rss_kib(pid: int) -> tuple[int, int]:
    """Resident memory of ``pid`` in KiB, and the part of it that is shared memory.

    Ray's object store is shared memory mapped in every worker: pages a worker
    touched count in its RSS, bounded by the store's size (128 MiB).
    """
    found = {"VmRSS:": 0, "RssShmem:": 0}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                key = line.split(maxsplit=1)[0]
                if key in found:
                    found[key] = int(line.split()[1])
    except OSError:
        pass
    return found["VmRSS:"], found["RssShmem:"]


def worker_pids() -> list[int]:
    """Processes titled ``ray::InstanceWorker``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                if handle.read(64).startswith(b"ray::InstanceWorker"):
                    found.append(int(name))
        except OSError:
            continue
    return found


class MemorySampler(threading.Thread):
    """Peak RSS of this process and of all workers together, sampled every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.driver = self.workers = self.driver_private = self.workers_private = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            rss, shm = rss_kib(os.getpid())
            self.driver = max(self.driver, rss)
            self.driver_private = max(self.driver_private, rss - shm)
            workers = [rss_kib(p) for p in worker_pids()]
            self.workers = max(self.workers, sum(r for r, _ in workers))
            self.workers_private = max(self.workers_private, sum(r - s for r, s in workers))

    def stop(self) -> None:
        self._done.set()
        self.join()


def timed_job(
    kind: str, src: Path, work: Path, workers: int, batch_size: int | None = None
) -> tuple[float, float, int, int, int]:
    """Run one job (``batch_size``: Ray batches of this size; None: sized as the job runs).

    Returns
    -------
    tuple
        Seconds, seconds until the first batch came back (actor start; 0 for the
        serial path), ok count, driver peak KiB, workers peak KiB.
    """
    from pipeline.distributed import DistributedJob, JobProgress, RayOptions
    from pipeline.job import run_job
    from pipeline.keys import Keyring
    from pipeline.profile import compile_profile, load_profile

    compiled = compile_profile(load_profile("dicom-basic"))
    keyring = Keyring(bytes(range(32)))
    out = work / f"out-{kind}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / f"r-{kind}-{workers}.json.state", ignore_errors=True)
    sampler = MemorySampler()
    sampler.start()
    first: list[float] = []
    t0 = time.perf_counter()

    def on_progress(p: JobProgress) -> None:
        if p.processed and not first:
            first.append(time.perf_counter() - t0)

    report_path = work / f"r-{kind}-{workers}.json"
    if kind == "serial":
        report = run_job([src], out, compiled, keyring, report_path=report_path, progress=False)
    else:
        job = DistributedJob([src], out, compiled, keyring, report_path=report_path,
                             options=RayOptions(workers=workers, batch_size=batch_size),
                             keep_entries=False)
        report = job.run(on_progress)
        sizes = sorted(job.batch_sizes.items())
        shown = ", ".join(f"{size}x{n}" for size, n in sizes[:4])
        more = f", ... {sizes[-1][0]}x{sizes[-1][1]}" if len(sizes) > 4 else ""
        print(f"    [{kind} {workers}] batches (size x count): {shown}{more}")
    seconds = time.perf_counter() - t0
    sampler.stop()
    shutil.rmtree(out, ignore_errors=True)
    startup = first[0] if first else 0.0
    print(f"    [{kind} {workers}] peak RSS: driver {sampler.driver // 1024} MiB "
          f"({sampler.driver_private // 1024} MiB not shared), workers "
          f"{sampler.workers // 1024} MiB ({sampler.workers_private // 1024} MiB not shared)")
    return seconds, startup, report.job.counts["ok"], sampler.driver, sampler.workers


def scaling(work: Path, count: int, fixed: Sequence[int] = ()) -> None:
    """(a) serial vs Ray 1 vs Ray 2 workers on one corpus, with adaptive batches and
    with each size in ``fixed``."""
    src = generate(work / f"corpus-{count}", count)
    print(f"\n(a) scaling: {count} instances, metadata-only (dicom-basic)")
    print(f"{'path':<24}{'seconds':>10}{'slices/s':>12}{'first batch s':>15}{'ok':>8}")
    seconds, _, ok, _, _ = timed_job("serial", src, work, 1)
    serial = count / seconds
    print(f"{'serial':<24}{seconds:>10.2f}{serial:>12.1f}{0.0:>15.2f}{ok:>8}")
    for batch in (None, *fixed):
        rates = {}
        for workers in (1, 2):
            seconds, startup, ok, _, _ = timed_job("ray", src, work, workers, batch)
            label = f"ray {workers} worker(s), " + ("adaptive" if batch is None else
                                                  f"batch {batch}")
            rates[workers] = count / seconds
            print(f"{label:<24}{seconds:>10.2f}{count / seconds:>12.1f}{startup:>15.2f}"
                  f"{ok:>8}")
        what = "adaptive batches" if batch is None else f"batches of {batch}"
        print(f"  {what}: scaling efficiency rate(2)/(2*rate(1)) = "
              f"{rates[2] / (2 * rates[1]):.2f}; Ray overhead rate(serial)/rate(ray 1) = "
              f"{serial / rates[1]:.2f}; ray 2 workers vs serial = {rates[2] / serial:.2f}")


def cost_curve(work: Path, sizes: Sequence[int], workers: int) -> None:
    """(b) wall time and peak memory per job size."""
    print(f"\n(b) cost curve: Ray, {workers} workers, metadata-only, keep_entries=False")
    print(f"{'instances':>10}{'seconds':>10}{'s per 1k':>10}{'driver MiB':>12}"
          f"{'workers MiB':>13}{'ok':>9}")
    for size in sizes:
        t0 = time.perf_counter()
        src = generate(work / f"corpus-{size}", size)
        made = time.perf_counter() - t0
        seconds, _, ok, driver, workers_kib = timed_job("ray", src, work, workers)
        print(f"{size:>10}{seconds:>10.1f}{seconds / size * 1000:>10.2f}{driver / 1024:>12.0f}"
              f"{workers_kib / 1024:>13.0f}{ok:>9}   (corpus written in {made:.1f} s)")
        shutil.rmtree(src, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="scaling corpus (2000)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                        help="cost-curve job sizes (1000 10000)")
    parser.add_argument("--workers", type=int, default=2, help="cost-curve workers (2)")
    parser.add_argument("--skip-scaling", action="store_true", help="cost curve only")
    parser.add_argument("--fixed", type=int, nargs="*", default=[],
                        help="also time Ray with these fixed batch sizes (e.g. 16)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (a temp dir)")
    parser.add_argument("--netns", action="store_true",
                        help="re-run inside a private network namespace (unshare -n; root)")
    args = parser.parse_args(argv)
    if args.netns and os.environ.get(NETNS_ENV) != "1":
        rest = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--netns"]
        os.environ[NETNS_ENV] = "1"
        script = 'ip link set lo up && exec "$0" -m benchmarks.bench_scale "$@"'
        os.execvp("unshare", ["unshare", "-n", "sh", "-c", script, sys.executable, *rest])
    import ray

    from pipeline.distributed.cluster import connect

    print(f"bench_scale: {platform.machine()}, {os.cpu_count()} CPU(s), python "
          f"{platform.python_version()}, ray {ray.__version__}, "
          f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC")
    print("command: python -m benchmarks.bench_scale " + " ".join(sys.argv[1:]))
    work = args.work or Path(tempfile.mkdtemp(prefix="veil-bench-scale-"))
    t0 = time.perf_counter()
    connect(max(2, args.workers))
    print(f"Ray started in {time.perf_counter() - t0:.1f} s (not counted in any job)")
    try:
        if not args.skip_scaling:
            scaling(work, args.count, args.fixed)
        cost_curve(work, args.sizes, args.workers)
    finally:
        ray.shutdown()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
