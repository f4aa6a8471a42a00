"""``kintofs push URL`` and ``kintofs pull URL``: copy to and from any Kinto server.

Buckets, groups, collections and records, with their permissions, schemas
and attached files, go from this data directory to a server speaking the
Kinto HTTP API (Kinto on PostgreSQL, another kintofs) or come back from
one, through the kinto-http client.  Safe while a daemon runs on the data
directory: local writes go through the store's transactions, as another
process's writes.  Run again (or ``--follow``), only what changed since the
last run is copied; docs/moving.md says how, and what does not travel.

Exit codes: 0 done, 1 conflicts or refused writes left (the rest is copied),
2 bad usage or an unreachable server.
"""

import fcntl
import hashlib
import os
import sys
import time

from ..config import ConfigError, load_settings
from ..fsstore import FileSystemStore, StorageError, layout
from ..fsstore.layout import FORMAT_FILE


def add_parsers(commands):
    for name, text in (
        ("push", "copy this data directory to a Kinto server (only changes, once done)"),
        ("pull", "copy a Kinto server into this data directory (only changes, once done)"),
    ):
        parser = commands.add_parser(name, help=text, description=__doc__.split("\n\n")[0])
        parser.add_argument("url", help="the server's root URL, ending in /v1")
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--auth", metavar="USER:PASSWORD", help="Basic auth on the server")
        who.add_argument("--token", help="a Bearer token for the server")
        parser.add_argument("--bucket", help="only this bucket")
        parser.add_argument("--collection", help="only this collection (with --bucket)")
        parser.add_argument(
            "--prefer",
            choices=("local", "remote"),
            help="the side whose version wins a conflict (default: report and leave both)",
        )
        parser.add_argument(
            "--map-principal",
            action="append",
            default=[],
            metavar="LOCAL=REMOTE",
            help="a principal of this data directory and its name on the server (repeatable)",
        )
        parser.add_argument(
            "--keep-own-principal",
            action="store_true",
            help="keep the server account's own principal in pulled permissions",
        )
        parser.add_argument("--dry-run", action="store_true", help="print what would change")
        parser.add_argument("--follow", action="store_true", help="copy changes until Ctrl-C")
        parser.add_argument(
            "--interval", type=float, default=10, metavar="SECONDS", help="--follow's pause (10)"
        )
        parser.add_argument("--state", metavar="PATH", help="the state file (see docs/moving.md)")
        parser.add_argument(
            "--config", help="TOML config file (default: ./kintofs.toml if present)"
        )
        parser.add_argument("--data-dir", help="data folder (default: from the settings)")


def run(args):
    # Here, not at the top: the other commands need neither kinto-http nor requests.
    from kinto_http import KintoException
    from requests import RequestException

    from .sides import RemoteSide, SideError

    command = f"kintofs {args.command}"
    try:
        settings = load_settings(args.config, overrides={"data_dir": args.data_dir})
        mapping = parse_mapping(args.map_principal)
        if args.collection and not args.bucket:
            raise ConfigError("--collection needs --bucket")
        if args.auth is not None and ":" not in args.auth:
            raise ConfigError("--auth wants USER:PASSWORD")
    except ConfigError as error:
        return fail(command, str(error), 2)
    data_dir = settings["data_dir"]
    if args.command == "push" and not os.path.isfile(os.path.join(data_dir, FORMAT_FILE)):
        return fail(command, f"{data_dir} is not a kintofs data directory (no {FORMAT_FILE})", 2)
    if args.command == "pull" and settings["readonly"]:
        return fail(command, "readonly is true in the settings: nothing can be pulled", 2)
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    if args.token:
        auth = f"Bearer {args.token}"
    try:
        remote = RemoteSide(args.url, auth)
    except SideError as error:
        return fail(command, str(error), 2)
    os.umask(0o077)  # as the daemon: the data belongs to its user alone
    store = FileSystemStore(data_dir, fsync=settings["fsync"])
    try:
        return copy_with(args, settings, store, remote, mapping)
    except (SideError, StorageError, KintoException, RequestException) as error:
        # A server that goes away or refuses half-way: what was done is kept, run again.
        return fail(command, f"{error}; what was copied stays, run again to go on", 1)
    finally:
        store.close()


def copy_with(args, settings, store, remote, mapping):
    from .sides import LocalSide
    from .sync import Mirror, State

    local = LocalSide(store, settings)
    state_path = args.state or default_state_path(store.root, args.url, remote.own_principal)
    with StateLock(state_path):
        state = State(state_path, fsync=settings["fsync"])
        if args.command == "push":
            source, target, prefer = local, remote, {"local": "source", "remote": "target"}
        else:
            source, target, prefer = remote, local, {"remote": "source", "local": "target"}
            mapping = {theirs: ours for ours, theirs in mapping.items()}
        mirror = Mirror(
            source,
            target,
            args.command,
            state,
            mapping,
            prefer=prefer.get(args.prefer),
            dry_run=args.dry_run,
            only_bucket=args.bucket,
            only_collection=args.collection,
            keep_own_principal=args.keep_own_principal,
        )
        warn_about_accounts(args.command, store, remote)
        if not target.copies_files:
            print(
                f"note: {target.name} has no attachments capability (kinto-attachment): "
                "records keep their attachment metadata, their files are not copied",
                file=sys.stderr,
            )
        while True:
            started = time.monotonic()
            totals = mirror.run()
            seconds = time.monotonic() - started
            rate = totals.records / seconds if seconds else 0.0
            what = "would change" if args.dry_run else "done"
            print(
                f"{args.command} {args.url} {what}: {totals.describe()}; "
                f"{totals.records} records in {seconds:.1f} s ({rate:.0f} records/s)"
            )
            if not args.follow:
                return 1 if totals.conflicts or totals.failed else 0
            time.sleep(args.interval)


def warn_about_accounts(command, store, remote):
    """Password hashes do not travel: kintofs uses scrypt, Kinto bcrypt."""
    if command == "push":
        accounts = len(store.list((), "account").objects())
        if accounts:
            print(
                f"note: {accounts} account(s) not copied: kintofs hashes passwords with "
                "scrypt, Kinto's accounts plugin with bcrypt, and neither reads the other's; "
                "create them again on the server (kinto create-user)",
                file=sys.stderr,
            )
    elif "accounts" in remote.capabilities:
        print(
            "note: the server's accounts are not copied: Kinto hashes passwords with bcrypt, "
            "kintofs with scrypt; create them again here (kintofs account add)",
            file=sys.stderr,
        )


def parse_mapping(pairs):
    mapping = {}
    for pair in pairs:
        local, sep, remote = pair.partition("=")
        if not sep or not local or not remote:
            raise ConfigError(f"--map-principal {pair!r}: expected LOCAL=REMOTE")
        mapping[local] = remote
    return mapping


def default_state_path(root, url, principal):
    """``<data>/_mirror/<key>.json``: one per server URL and account on it."""
    key = hashlib.sha256(f"{url.rstrip('/')}\n{principal}".encode()).hexdigest()[:16]
    return layout.mirror_state_path(root, key)


class StateLock:
    """The state file's lock: one push or pull at a time per state file."""

    def __init__(self, state_path):
        self.path = state_path + ".lock"

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            from .sides import SideError

            os.close(self.fd)
            raise SideError(f"another push or pull uses {self.path[:-5]}: wait for it") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def fail(command, message, code):
    print(f"{command}: {message}", file=sys.stderr)
    return code
