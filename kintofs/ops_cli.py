"""Operator commands: ``kintofs check``, ``kintofs backup``, ``kintofs restore``.

Each works on the data directory named by ``--data-dir``, or else by the
settings (``--config``, ``KINTOFS_DATA_DIR``, ``./kintofs.toml``), like
``kintofs serve``.  ``check`` and ``backup`` are safe while a daemon runs;
``restore`` wants the daemon stopped.

Exit codes: 0 done and clean, 1 problems found (or left), 2 bad usage.
"""

import os
import sys

from .config import ConfigError, load_settings
from .fsstore.layout import quarantine_folder


def add_commands(commands):
    """Add the operator sub-commands to the ``kintofs`` argument parser."""
    check = commands.add_parser("check", help="verify every file and journal of the data directory")
    check.add_argument(
        "--repair", action="store_true", help="fix what can be fixed (safe while the daemon runs)"
    )
    check.add_argument(
        "--lock-wait",
        type=float,
        default=10,
        metavar="SECONDS",
        help="how long a lock may stay busy before its holder is reported (10)",
    )
    check.set_defaults(handler=run_check)

    backup = commands.add_parser("backup", help="copy the data directory while the daemon runs")
    backup.add_argument("dest", help="a new folder, or a file ending in .tar.gz")
    backup.set_defaults(handler=run_backup)

    restore = commands.add_parser("restore", help="put a backup in place as the data directory")
    restore.add_argument("src", help="a backup folder or .tar.gz")
    restore.add_argument(
        "--force",
        action="store_true",
        help="move a non-empty data directory aside instead of refusing",
    )
    restore.set_defaults(handler=run_restore)

    for parser in (check, backup, restore):
        parser.add_argument(
            "--config", help="TOML config file (default: ./kintofs.toml if present)"
        )
        parser.add_argument("--data-dir", help="data folder (default: from the settings)")


def run(args):
    """Run the operator command that ``args`` names; returns the exit code."""
    try:
        settings = load_settings(args.config, overrides={"data_dir": args.data_dir})
    except ConfigError as error:
        return _fail(str(error), 2)
    return args.handler(args, settings)


def run_check(args, settings):
    from .fsstore.repair import repair
    from .fsstore.verify import verify

    data_dir = settings["data_dir"]
    if not os.path.isdir(data_dir):
        return _fail(f"{data_dir} is not a folder", 2)
    report = verify(data_dir, lock_wait=args.lock_wait)
    _print_findings(report)
    if args.repair and not report.clean:
        for action in repair(report):
            print(f"REPAIRED {action}")
        report = verify(data_dir, lock_wait=args.lock_wait)
        print("after repair:")
        _print_findings(report)
    return 0 if report.clean else 1


def _print_findings(report):
    for finding in report.findings:
        print(finding.describe(report.root))
    if report.quarantined:
        print(f"note: {report.quarantined} file(s) kept in {quarantine_folder(report.root)}")
    print(report.summary())


def run_backup(args, settings):
    from .fsstore.backup import BackupError, backup

    data_dir = settings["data_dir"]
    try:
        stats = backup(data_dir, args.dest, fsync=settings["fsync"])
    except BackupError as error:
        return _fail(str(error), 1)
    print(
        f"backup of {data_dir} written to {os.path.abspath(args.dest)}: {stats.lists} lists, "
        f"{stats.files} files, {stats.bytes} bytes in {stats.seconds():.2f}s "
        f"(longest lock held: {stats.longest_lock_ms:.1f} ms)"
    )
    return 0


def run_restore(args, settings):
    from .fsstore.backup import BackupError, restore
    from .fsstore.verify import verify

    data_dir = settings["data_dir"]
    try:
        moved_aside = restore(args.src, data_dir, force=args.force, fsync=settings["fsync"])
    except BackupError as error:
        return _fail(str(error), 1)
    if moved_aside:
        print(f"the previous data directory was moved to {moved_aside}")
    print(f"restored {os.path.abspath(args.src)} into {data_dir}")
    report = verify(data_dir)
    _print_findings(report)
    return 0 if report.clean else 1


def _fail(message, code):
    # One line: tarfile's errors list every compression method tried, one per line.
    message = message.splitlines()[0].rstrip(": ") if message else message
    print(f"kintofs: {message}", file=sys.stderr)
    return code
