"""The ``veil`` command line.

Exit statuses: 0 when nothing failed, 1 when an input failed (or a profile
did not validate), 2 for usage, profile and key errors. No command prints a
dataset value unless asked to (``inspect --show-values``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline import __version__
from pipeline.engine import AttributeAction, plan
from pipeline.errors import InputError, KeyFileError, ProfileError, VeilError
from pipeline.io.reader import read_instance
from pipeline.io.report import JobReport, UsageError
from pipeline.job import run_job
from pipeline.keys import Keyring
from pipeline.profile import CompiledProfile, compile_profile, list_profiles, load_profile
from pipeline.profile import validate_profile_file as _validate

if TYPE_CHECKING:
    from pipeline.verify import VerifyReport

__all__ = ["build_parser", "main"]

log = logging.getLogger(__name__)

KEY_ENV = "VEIL_KEY_FILE"
DEFAULT_PROFILE = "dicom-basic"
_USAGE_ERRORS = (ProfileError, KeyFileError, UsageError)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``veil``."""
    parser = argparse.ArgumentParser(prog="veil", description="De-identify DICOM files.")
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    deid = sub.add_parser("deid", help="de-identify files or folders into an output folder")
    deid.add_argument("sources", nargs="+", metavar="SOURCE", help="file or folder")
    deid.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _profile_args(deid, required=True)
    _key_arg(deid)
    deid.add_argument("--report", metavar="FILE", help="JSON report (outside --out)")
    deid.add_argument("--map-file", metavar="FILE", help="private pseudonym map (outside --out)")
    deid.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    from pipeline.distributed.cli import add_distributed_args  # light; Ray imported on use

    add_distributed_args(deid)
    deid.set_defaults(func=_cmd_deid)

    profiles = sub.add_parser("profiles", help="list, show or validate profiles")
    psub = profiles.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    plist = psub.add_parser("list", help="list the built-in profiles")
    plist.set_defaults(func=_cmd_profiles_list)
    show = psub.add_parser("show", help="print a resolved profile and its content hash")
    show.add_argument("ref", metavar="NAME|PATH")
    show.add_argument("--option", action="append", default=[], metavar="NAME")
    show.set_defaults(func=_cmd_profiles_show)
    validate = psub.add_parser("validate", help="validate profile files")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(func=_cmd_profiles_validate)
    from training.cli import add_profiles_register_parser, add_train_parser  # light; MLflow on use

    add_profiles_register_parser(psub)

    inspect = sub.add_parser("inspect", help="dry run: what a profile would change in a file")
    inspect.add_argument("file", metavar="FILE")
    _profile_args(inspect, required=False)
    _key_arg(inspect)
    inspect.add_argument("--show-values", action="store_true", help="print values unmasked")
    inspect.add_argument("--all", action="store_true", help="list kept attributes too")
    inspect.set_defaults(func=_cmd_inspect)

    keygen = sub.add_parser("keygen", help="write a new random secret key file (mode 0600)")
    keygen.add_argument("file", metavar="FILE")
    keygen.set_defaults(func=_cmd_keygen)

    verify = sub.add_parser("verify", help="look for residual PHI in de-identified output")
    verify.add_argument("folder", metavar="DIR", help="de-identified output folder")
    verify.add_argument("--report", metavar="FILE", help="JSON report (outside DIR)")
    verify.add_argument("--no-pixels", action="store_true", help="do not read pixel data (OCR)")
    verify.set_defaults(func=_cmd_verify)

    demo = sub.add_parser("demo", help="de-identify the sample files bundled with pydicom")
    demo.add_argument("--out", default="demo-output", metavar="DIR", help="(demo-output)")
    _profile_args(demo, required=False)
    demo.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    demo.set_defaults(func=_cmd_demo)
    add_train_parser(sub)
    from serving.cli import add_serve_parser  # light; Ray imported only when it runs

    add_serve_parser(sub)
    return parser


def _profile_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """Add --profile and --option."""
    parser.add_argument(
        "--profile",
        required=required,
        default=None if required else DEFAULT_PROFILE,
        metavar="NAME|PATH",
        help="built-in profile name or YAML file" + ("" if required else f" ({DEFAULT_PROFILE})"),
    )
    parser.add_argument(
        "--option", action="append", default=[], metavar="NAME", help="extra profile option"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="profile setting, e.g. trial.mapping_csv=map.csv or dates.shift_min_days=-30",
    )


def _key_arg(parser: argparse.ArgumentParser) -> None:
    """Add --key-file."""
    parser.add_argument(
        "--key-file", metavar="FILE", help=f"secret key file (default: ${KEY_ENV}, else random)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``veil``; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    _setup_logging(args.verbose)
    err = Console(stderr=True)
    try:
        status: int = args.func(args, err)
    except _USAGE_ERRORS as exc:
        err.print(Text(f"veil: error: {exc}"))
        return 2
    except KeyboardInterrupt:
        err.print(Text("veil: interrupted"))
        return 130
    except Exception as exc:
        if os.environ.get("VEIL_DEBUG"):
            raise
        # The message may quote a value: print the class name only.
        err.print(Text(f"veil: internal error ({type(exc).__name__}); set VEIL_DEBUG=1 to debug"))
        return 1
    return status


def _setup_logging(verbose: int) -> None:
    """Log to stderr; -v for info, -vv for debug."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="veil: %(levelname)s: %(message)s", stream=sys.stderr)


def _keyring(key_file: str | None, err: Console, *, warn: bool) -> Keyring:
    """The key from --key-file or $VEIL_KEY_FILE, else a random one (with a warning)."""
    path = key_file or os.environ.get(KEY_ENV)
    if path:
        return Keyring.from_file(path)
    if warn:
        err.print(
            Text(
                "veil: warning: no --key-file (or $VEIL_KEY_FILE): using a random one-off key; "
                "pseudonyms will not be reproducible across runs",
                style="yellow",
            )
        )
    return Keyring.generate()


def _overrides(pairs: Sequence[str]) -> dict[str, str]:
    """Parse ``--set KEY=VALUE`` pairs."""
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set needs KEY=VALUE, got {pair!r}")
        result[key.strip()] = value
    return result


def _compile(ref: str, options: Sequence[str], overrides: Sequence[str] = ()) -> CompiledProfile:
    """Load and compile a profile."""
    return compile_profile(load_profile(ref, options, _overrides(overrides)))


def _cmd_deid(args: argparse.Namespace, err: Console) -> int:
    """``veil deid``."""
    compiled = _compile(args.profile, args.option, args.overrides)
    keyring = _keyring(args.key_file, err, warn=True)
    for source in args.sources:
        if not Path(source).exists():
            raise UsageError(f"no such file or folder: {source}")
    from pipeline.distributed.cli import run_distributed

    try:
        report = run_distributed(args, compiled, keyring) or run_job(
            args.sources,
            args.out,
            compiled,
            keyring,
            report_path=args.report,
            map_path=args.map_file,
            progress=not args.quiet,
        )
    except InputError as exc:
        raise UsageError(str(exc)) from None
    if not args.quiet:
        _print_summary(report, args.report, Console())
    return 1 if report.failed else 0


def _print_summary(report: JobReport, report_path: str | None, out: Console) -> None:
    """Print the counts and the job facts."""
    job = report.job
    table = Table(title="veil deid", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for status, count in job.counts.items():
        style = "red" if status == "failed" and count else ""
        table.add_row(status, Text(str(count), style=style))
    table.add_row("total", str(len(report.files)))
    table.add_row("speed", f"{job.files_per_s:.1f} files/s ({job.duration_s:.1f} s)")
    table.add_row("output", Text(job.output_dir))
    table.add_row("profile", Text(f"{job.profile.name} sha256:{job.profile.content_hash}"))
    key = f"{job.key.fingerprint}" + (" (ephemeral)" if job.key.ephemeral else "")
    table.add_row("key", key)
    table.add_row("report", Text(report_path or "-"))
    out.print(table)
    failed = [(f.source, f.reason) for f in report.files if f.status == "failed"]
    if failed:
        _print_failed(out, "failed inputs", "source", failed)
        if len(failed) > 20:
            out.print(Text("... see the report (--report FILE) for all of them"))


def _cmd_profiles_list(args: argparse.Namespace, err: Console) -> int:
    """``veil profiles list``."""
    table = Table(title="built-in profiles")
    for column in ("name", "description", "compliance", "options"):
        table.add_column(column, overflow="fold")
    for profile in list_profiles():
        table.add_row(
            Text(profile.name),
            Text(profile.description),
            Text(", ".join(profile.compliance)),
            Text(", ".join(profile.options)),
        )
    Console().print(table)
    return 0


def _cmd_profiles_show(args: argparse.Namespace, err: Console) -> int:
    """``veil profiles show``: the resolved YAML, then its content hash as a comment."""
    profile = load_profile(args.ref, args.option, allow_disabled=True)
    sys.stdout.write(profile.to_yaml())
    sys.stdout.write(f"# content_hash: sha256:{profile.content_hash}\n")
    return 0


def _cmd_profiles_validate(args: argparse.Namespace, err: Console) -> int:
    """``veil profiles validate``: one line per file; 1 if any is invalid."""
    status = 0
    for name in args.files:
        try:
            profile = _validate(name)
        except ProfileError as exc:
            sys.stdout.write(f"error: {exc}\n")
            status = 1
        else:
            sys.stdout.write(f"ok: {name} ({profile.name}, sha256:{profile.content_hash[:16]})\n")
    return status


def _cmd_demo(args: argparse.Namespace, err: Console) -> int:
    """``veil demo``: copy pydicom's sample files and de-identify them."""
    from pipeline import demo

    compiled = _compile(args.profile, args.option, args.overrides)
    inputs, output, report_path, key_path = demo.prepare(Path(args.out))
    if not key_path.exists():
        Keyring.generate().write(key_path)
    keyring = Keyring.from_file(key_path)
    report = run_job(
        [str(inputs)], str(output), compiled, keyring,
        report_path=str(report_path), progress=not args.quiet,
    )
    if not args.quiet:
        _print_summary(report, str(report_path), Console())
        sys.stdout.write(
            f"inputs: {inputs}\noutput: {output}\nreport: {report_path}\n"
            f"key: {key_path} (outside the output folder)\n"
        )
    return 1 if report.failed else 0


def _cmd_verify(args: argparse.Namespace, err: Console) -> int:
    """``veil verify``: 0 when nothing is suspect, 1 when a file is suspect or failed."""
    from pipeline import verify

    if not Path(args.folder).is_dir():
        raise UsageError(f"no such folder: {args.folder}")
    if args.report:
        verify.check_report_path(args.report, args.folder)
    report = verify.verify_folder(args.folder, pixels=not args.no_pixels)
    if args.report:
        verify.write_verify_report(report, args.report)
    _print_verify(report, args.report, Console())
    return 1 if report.flagged else 0


def _print_verify(report: VerifyReport, report_path: str | None,
                  out: Console) -> None:
    """Print the totals and the suspects (where and what kind; never a value)."""
    table = Table(title="veil verify", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for status, count in report.totals.counts.items():
        style = "red" if status in ("suspect", "failed") and count else ""
        table.add_row(status, Text(str(count), style=style))
    table.add_row("total", str(report.totals.files))
    table.add_row("suspects", f"{report.totals.header_suspects} header, "
                              f"{report.totals.pixel_suspects} pixel")
    table.add_row("pixels", "read (OCR)" if report.pixels_checked else "not read (--no-pixels)")
    table.add_row("folder", Text(report.folder))
    table.add_row("report", Text(report_path or "-"))
    out.print(table)
    rows = [(f.path, s) for f in report.files for s in f.suspects]
    if rows:
        found = Table(title=f"suspects ({len(rows)})")
        for column in ("file", "where", "kind", "entity", "score"):
            found.add_column(column, overflow="fold")
        for path, suspect in rows[:50]:
            found.add_row(Text(path), Text(suspect.where), suspect.kind,
                          Text(suspect.entity, style="red"), f"{suspect.score:.2f}")
        out.print(found)
        if len(rows) > 50:
            out.print(Text("... see the report (--report FILE) for all of them"))
    failed = [(f.path, f.reason) for f in report.files if f.status == "failed"]
    if failed:
        _print_failed(out, "failed files", "file", failed)


def _cmd_keygen(args: argparse.Namespace, err: Console) -> int:
    """``veil keygen``: a new random key, never over an existing file."""
    keyring = Keyring.generate()
    try:
        keyring.write(args.file)
    except FileExistsError:
        raise UsageError(f"{args.file} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.file}: {exc.strerror}") from None
    os.chmod(args.file, 0o600)
    sys.stdout.write(f"wrote {args.file} (fingerprint {keyring.fingerprint})\n")
    return 0


def _cmd_inspect(args: argparse.Namespace, err: Console) -> int:
    """``veil inspect``: a dry run over one file; values masked unless --show-values."""
    compiled = _compile(args.profile, args.option, args.overrides)
    keyring = _keyring(args.key_file, err, warn=False)
    try:
        ds = read_instance(args.file)
    except InputError as exc:
        err.print(Text(f"veil: {args.file}: {exc.status}: {exc}"))
        return 1
    try:
        actions = plan(ds, compiled, keyring)
    except VeilError as exc:
        err.print(Text(f"veil: {args.file}: de-identification would fail: {exc}"))
        return 1
    shown = [a for a in actions if args.all or a.action != "keep"]
    table = Table(title=f"{compiled.name}: {len(shown)} attribute(s)")
    for column in ("path", "tag", "keyword", "VR", "action", "source", "PHI", "value"):
        table.add_column(column, overflow="fold")
    flagged = 0
    for action in shown:
        value = _lookup(ds, action.path)
        phi = _phi_flag(action, value)
        flagged += phi == "yes"
        table.add_row(
            *(Text(v) for v in (action.path, action.tag, action.keyword, action.vr)),
            Text(action.action),
            Text(action.source),
            Text(phi, style="red" if phi else ""),
            Text(_display(value, show=args.show_values)),
        )
    Console().print(table)
    Console().print(Text(f"{flagged} attribute(s) hold values the profile removes or replaces"))
    return 0


_SEGMENT = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)(?:\[(\d+)\])?")


def _lookup(ds: Dataset, path: str) -> object:
    """Value at an action path like ``(0008,1140)[0].(0008,1155)``; None if absent."""
    current: object = ds
    for match in _SEGMENT.finditer(path):
        if not isinstance(current, Dataset):
            return None
        tag = int(match.group(1) + match.group(2), 16)
        if tag not in current:
            return None
        value = current[tag].value
        if match.group(3) is not None:
            try:
                value = value[int(match.group(3))]
            except (IndexError, TypeError):
                return None
        current = value
    return None if current is ds else current


def _phi_flag(action: AttributeAction, value: object) -> str:
    """``yes`` when a non-empty value is removed or replaced; ``review`` for a kept name."""
    if value is None or (isinstance(value, Sized) and len(value) == 0):
        return ""
    if action.action != "keep":
        return "yes"
    return "review" if action.vr == "PN" else ""


def _display(value: object, *, show: bool) -> str:
    """Masked (first character and asterisks) or plain text of a value."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, Dataset):
        return "<item>"
    if isinstance(value, DicomSequence):
        return f"<{len(value)} item(s)>"
    text = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
    if show:
        return text if len(text) <= 80 else text[:77] + "..."
    if not text:
        return ""
    return text[0] + "*" * min(len(text) - 1, 11)


def _print_failed(out: Console, title: str, column: str,
                  failed: Sequence[tuple[str, str | None]]) -> None:
    """A table of the first 20 failures: where, and the reason (never a value)."""
    fails = Table(title=f"{title} ({len(failed)})")
    fails.add_column(column, overflow="fold")
    fails.add_column("reason", overflow="fold")
    for where, reason in failed[:20]:
        fails.add_row(Text(where), Text(reason or ""))
    out.print(fails)
