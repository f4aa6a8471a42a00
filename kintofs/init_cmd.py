"""``kintofs init``: a config file and a data directory, ready to serve.

Writes ``kintofs.toml`` with a secret of its own, creates the data directory
readable by its owner only, and optionally the first administrator account.
It never overwrites a config file: an existing one is someone's settings and
secret, and replacing the secret would change every ``basicauth:`` user id.
"""

from __future__ import annotations

import datetime
import json
import os
import shlex
import shutil
import stat
import sys

from . import accounts_cli
from .config import DEFAULT_CONFIG_FILE, ConfigError, load_settings
from .fsstore import FileSystemStore, StorageError
from .fsstore.atomic import fsync_folder, remove_quietly
from .fsstore.layout import FORMAT_FILE, secret_file
from .passwords import hash_password

SECRET_NAME = "userid_hmac_secret"


class InitError(Exception):
    """Why ``kintofs init`` stopped; the message is for the user."""


def add_init_parser(commands):
    init = commands.add_parser(
        "init",
        help="write a kintofs.toml and create the data directory",
        description="Write a new config file with a generated userid_hmac_secret, create "
        "the data directory (owner-only permissions) and optionally the first "
        "admin account. An existing config file is never overwritten.",
    )
    init.add_argument(
        "--config",
        default=DEFAULT_CONFIG_FILE,
        help="config file to write (default ./kintofs.toml)",
    )
    init.add_argument(
        "--data-dir",
        default="./data",
        help="data directory to create (default ./data, relative to the "
        "current directory; written into the config as an absolute path)",
    )
    init.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    init.add_argument("--port", type=int, default=8888, help="port to listen on")
    init.add_argument(
        "--admin",
        metavar="NAME",
        help="create the account NAME and make it the accounts administrator "
        "(enables the accounts plugin)",
    )
    init.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the admin password from the first line of standard input",
    )


def run_init(args) -> int:
    os.umask(0o077)  # as the daemon: the data belongs to its user alone
    try:
        message = initialise(args)
    except InitError as error:
        print(f"kintofs init: {error}", file=sys.stderr)
        return 1
    print(message)
    return 0


def initialise(args) -> str:
    """Do it all, or leave nothing behind.

    Everything that can be checked is checked, and the admin password
    obtained, before anything is created; if a later step still fails (or
    is interrupted), what this run created is removed again.
    """
    prog = getattr(args, "prog", "kintofs")  # how to run kintofs again, for the hints
    config_path = os.path.abspath(args.config)
    data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
    refuse_existing(config_path)
    check_flags(args, data_dir)
    check_can_create(data_dir, "data directory")
    check_can_create(os.path.dirname(config_path), "folder of the config file")
    password_hash = None
    if args.admin is not None:
        password_hash = admin_password_hash(args.admin, args.password_stdin)
    undo = Undo()
    store = None
    try:
        store = prepare_data_dir(data_dir, undo)
        text = config_text(
            bind=args.bind,
            port=args.port,
            data_dir=data_dir,
            secret=userid_secret(store),
            admin=args.admin,
        )
        # The config is published last: once it exists, init is done.
        staged = stage_config(config_path, text, undo)
        try:
            check_staged(staged)
            if args.admin is not None:
                create_admin_account(store, args.admin, password_hash, undo, prog)
            publish_config(staged, config_path, undo)
        finally:
            if os.path.exists(staged):
                os.unlink(staged)
    except BaseException:
        undo.run()
        raise
    finally:
        if store is not None:
            store.close()  # no commit log left behind
    return summary(config_path, data_dir, args.admin, prog)


class Undo:
    """What this run of init created, removed again (newest first) if it fails."""

    def __init__(self):
        self.steps = []

    def add(self, step):
        self.steps.append(step)

    def created_folders(self, folder, remove):
        """Before creating ``folder`` and its parents: remove what did not exist.

        ``remove`` is given the highest folder that did not exist.
        """
        top = None
        while not os.path.lexists(folder):
            top, folder = folder, os.path.dirname(folder)
        if top is not None:
            self.add(lambda: remove(top))

    def created_file(self, path):
        """Before writing ``path``: remove it if it did not exist."""
        if not os.path.lexists(path):
            self.add(lambda: os.unlink(path))

    def run(self):
        for step in reversed(self.steps):
            try:
                step()
            except (OSError, StorageError):
                pass  # a best effort: the error that stopped init is the one to report
        self.steps.clear()


def remove_empty_folders(top):
    """Remove ``top`` if empty and its empty subfolders (what makedirs created)."""
    for folder, _, _ in sorted(os.walk(top), reverse=True):  # deepest first
        os.rmdir(folder)


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------


def refuse_existing(config_path):
    if os.path.lexists(config_path):
        raise InitError(
            f"{config_path} already exists; not overwriting it (it holds the "
            "secret behind every basicauth user id). Move it away first, or "
            "pass --config with another path."
        )


def check_flags(args, data_dir):
    try:
        load_settings(
            os.devnull,
            environ={},
            overrides={"bind": args.bind, "port": args.port, "data_dir": data_dir},
        )
    except ConfigError as error:
        raise InitError(str(error)) from None
    if args.admin is not None:
        try:
            accounts_cli.checked_id(args.admin)
        except accounts_cli.CommandError as error:
            raise InitError(str(error)) from None


def check_can_create(path, what):
    """``path`` is a folder, or can be created: its nearest existing parent is a writable folder."""
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise InitError(f"cannot use {path} as the {what}: {existing} is not a folder")
    if existing != path and not os.access(existing, os.W_OK | os.X_OK):
        raise InitError(f"cannot create the {what} {path}: {existing} is not writable")


# ---------------------------------------------------------------------------
# Data directory and config file
# ---------------------------------------------------------------------------


def prepare_data_dir(data_dir, undo) -> FileSystemStore:
    """Create the data directory, owner-only, and open the store in it."""
    # A new data directory is removed whole; in an existing one (perhaps in
    # use by a daemon) only the files init may add, the account aside.
    undo.created_folders(data_dir, shutil.rmtree)
    if os.path.isdir(data_dir):
        undo.created_file(os.path.join(data_dir, FORMAT_FILE))
        undo.created_file(os.path.join(data_dir, secret_file(SECRET_NAME)))
        mode = stat.S_IMODE(os.stat(data_dir).st_mode)
        undo.add(lambda: os.chmod(data_dir, mode))
    try:
        store = FileSystemStore(data_dir)
        # makedirs leaves an existing directory's mode alone: tighten it.
        os.chmod(data_dir, 0o700)
    except (OSError, StorageError) as error:
        raise InitError(f"cannot prepare the data directory {data_dir}: {error}") from None
    return store


def userid_secret(store) -> str:
    """A freshly generated secret, or the one a used data directory already has.

    Keeping an existing one keeps the basicauth user ids its objects are
    owned by. The store keeps a copy too, so the ids survive a lost config.
    """
    try:
        return store.persistent_secret(SECRET_NAME)
    except OSError as error:
        raise InitError(f"cannot keep the secret in {store.root}: {error}") from None


def toml_string(value: str) -> str:
    # JSON escapes quotes, backslashes and control characters as TOML wants.
    # Not ensure_ascii: TOML refuses the surrogate pairs JSON writes for emoji.
    # TOML also wants DEL escaped, which JSON leaves as is.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def config_text(*, bind, port, data_dir, secret, admin) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        f"# kintofs.toml written by `kintofs init` on {today}.",
        "# Settings not written here keep their defaults; docs/configuration.md",
        "# describes every setting (the sample kintofs.toml of the source tree",
        "# lists them all with their defaults).",
        "",
        f"bind = {toml_string(bind)}",
        f"port = {port}",
        f"data_dir = {toml_string(data_dir)}",
        "",
        "# Keys the HMAC that turns Basic-auth credentials into basicauth: user ids.",
        "# Keep it secret; changing it changes every basicauth user id.",
        f"{SECRET_NAME} = {toml_string(secret)}",
    ]
    if admin is not None:
        principal = toml_string(f"account:{admin}")
        lines += [
            "",
            f"# Accounts: users log in with accounts only; {admin} administers every",
            "# account and is the only one who may create accounts.",
            'plugins = ["accounts"]',
            'auth_policies = ["account"]',
            f"account_write_principals = [{principal}]",
            f"account_create_principals = [{principal}]",
        ]
    return "\n".join(lines) + "\n"


def stage_config(config_path, text, undo) -> str:
    """Write ``text`` to a private file beside ``config_path``; return its path."""
    folder = os.path.dirname(config_path)
    undo.created_folders(folder, remove_empty_folders)
    try:
        os.makedirs(folder, exist_ok=True)
        staged = os.path.join(folder, f".{os.path.basename(config_path)}.init-{os.getpid()}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # holds a secret
        undo.add(lambda: remove_quietly(staged))  # if it is not whole
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        raise InitError(f"cannot write {config_path}: {error}") from None
    return staged


def check_staged(staged):
    # Read as `kintofs serve --config` will read it; settings from the
    # environment are left out so that they cannot hide a mistake here.
    try:
        load_settings(staged, environ={})
    except ConfigError as error:
        raise InitError(f"the new config is invalid: {error}") from None


def publish_config(staged, config_path, undo):
    # link() fails if the name exists: another `init` that won the race keeps its file.
    try:
        os.link(staged, config_path)
        undo.add(lambda: os.unlink(config_path))  # should the rest fail: not without its data
        fsync_folder(os.path.dirname(config_path))
    except FileExistsError:
        refuse_existing(config_path)
    except OSError as error:
        raise InitError(f"cannot write {config_path}: {error}") from None


# ---------------------------------------------------------------------------
# First account
# ---------------------------------------------------------------------------


def admin_password_hash(name, password_stdin) -> str:
    """Ask for the admin's password, as ``kintofs account add NAME`` does."""
    try:
        password = accounts_cli.read_password(name, password_stdin, outcome="nothing was created")
    except accounts_cli.CommandError as error:
        raise InitError(str(error)) from None
    return hash_password(password)


def create_admin_account(store, name, password_hash, undo, prog):
    try:
        accounts_cli.create_account(store, name, password_hash, prog=prog)
    except (accounts_cli.CommandError, StorageError, OSError) as error:
        raise InitError(f"cannot create the account {name!r}: {error}") from None
    undo.add(lambda: delete_account(store, name))


def delete_account(store, name):
    with store.list((), accounts_cli.KIND).transaction() as writer:
        writer.delete(name)


def summary(config_path, data_dir, admin, prog) -> str:
    lines = [
        f"wrote {config_path} (owner-only: it holds the userid secret)",
        f"data directory {data_dir} (owner-only)",
    ]
    if admin is not None:
        lines.append(f"{admin!r} administers every account")
    lines.append(f"start with: {prog} serve --config {shlex.quote(config_path)}")
    return "\n".join(lines)
