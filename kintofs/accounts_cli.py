"""``kintofs account add|passwd|del|list``: manage accounts in the data folder.

Works with or without a daemon running on the same folder: it writes the
same files (``accounts/<id>.json`` and ``<id>.acl``) through the same store,
under the same list lock, and hashes passwords exactly as the daemon does.
A running daemon sees the change on its next request; a changed or deleted
account's cached credentials stop working at once.

Passwords are read from the terminal, or with ``--password-stdin`` from the
first line of standard input (for scripts); never from the command line,
where other users could read them in the process list.
"""

import getpass
import os
import shlex
import sys
import warnings

from . import ids
from .config import ConfigError, load_settings
from .fsstore import FileSystemStore, StorageError
from .passwords import hash_password

KIND = "account"


class CommandError(Exception):
    """A failure to report in one line (exit status 1)."""


def add_parser(commands):
    """Register ``account`` and its actions on the ``kintofs`` subcommands."""
    account = commands.add_parser(
        "account",
        help="manage accounts (accounts plugin) offline",
        description=__doc__.split("\n\n")[0],
    )
    actions = account.add_subparsers(dest="action", required=True)
    for action, text in (
        ("add", "create an account"),
        ("passwd", "change a password"),
        ("del", "delete an account"),
        ("list", "list account ids"),
    ):
        parser = actions.add_parser(action, help=text)
        if action != "list":
            parser.add_argument("account_id", metavar="ID", help="the account id (user name)")
        if action in ("add", "passwd"):
            parser.add_argument(
                "--password-stdin",
                action="store_true",
                help="read the password from the first line of stdin",
            )
        parser.add_argument(
            "--config", help="TOML config file (default: ./kintofs.toml if present)"
        )
        parser.add_argument("--data-dir", help="data folder (default ./data)")


def run(args):
    """Run ``kintofs account <action>``; the process exit status."""
    try:
        settings = load_settings(args.config, overrides={"data_dir": args.data_dir})
        if args.action != "list":
            check_writable(settings)
    except ConfigError as error:
        print(f"kintofs account: {error}", file=sys.stderr)
        return 2
    os.umask(0o077)  # as the daemon: the data belongs to its user alone
    try:
        if args.action != "add" and not os.path.isdir(settings["data_dir"]):
            # Only `add` may be the first to use a data directory.
            raise CommandError(
                f"no data directory {settings['data_dir']}"
                + ("" if args.action == "list" else "; nothing changed")
            )
        store = FileSystemStore(settings["data_dir"], fsync=settings["fsync"])
        try:
            ACTIONS[args.action](store, args)
        finally:
            store.close()  # no commit log left behind
    except (CommandError, StorageError, OSError) as error:
        print(f"kintofs account {args.action}: {error}", file=sys.stderr)
        return 1
    return 0


def check_writable(settings):
    """Kinto's ``create-user`` refuses a server without the plugin, or read-only."""
    where = settings.config_path or "the settings"
    if "accounts" not in settings["plugins"]:
        raise ConfigError(
            f'the accounts plugin is not enabled in {where}: add "accounts" to '
            "plugins (or pass the daemon's --config)",
            key="plugins",
        )
    if settings["readonly"]:
        raise ConfigError(f"readonly is true in {where}: accounts cannot change", key="readonly")


# -- actions ---------------------------------------------------------------


def add_account(store, args):
    account_id = checked_id(args.account_id)
    password_hash = hash_password(read_password(account_id, args.password_stdin))
    create_account(store, account_id, password_hash, prog=getattr(args, "prog", "kintofs"))
    print(f"account {account_id!r} created")


def create_account(store, account_id, password_hash, prog="kintofs"):
    """Store a new account (hash the password before: slow, not under the lock)."""
    with store.list((), KIND).transaction() as writer:
        if writer.get(account_id) is not None:
            raise CommandError(
                f"account {account_id!r} already exists (change its password "
                f"with: {prog} account passwd {shlex.quote(account_id)})"
            )
        writer.put(account_id, {"password": password_hash}, {"write": [f"account:{account_id}"]})


def change_password(store, args):
    account_id = checked_id(args.account_id)
    require_account(store.get((), KIND, account_id), account_id)  # before asking for a password
    password_hash = hash_password(read_password(account_id, args.password_stdin))
    with store.list((), KIND).transaction() as writer:
        existing = require_account(writer.get(account_id), account_id)
        data = {k: v for k, v in existing.data.items() if k not in ("id", "last_modified")}
        writer.put(account_id, {**data, "password": password_hash}, existing.acl)
    print(f"password of account {account_id!r} changed")


def delete_account(store, args):
    account_id = checked_id(args.account_id)
    with store.list((), KIND).transaction() as writer:
        require_account(writer.get(account_id), account_id)
        writer.delete(account_id)
    print(f"account {account_id!r} deleted")


def list_accounts(store, args):
    for account_id in sorted(store.list((), KIND).objects()):
        print(account_id)


ACTIONS = {
    "add": add_account,
    "passwd": change_password,
    "del": delete_account,
    "list": list_accounts,
}


# -- helpers ---------------------------------------------------------------


def checked_id(account_id):
    if not ids.is_valid_id(account_id, ids.ACCOUNT_ID):
        raise CommandError(
            f"{account_id!r} is not a valid account id: it must match "
            f"{ids.ACCOUNT_ID.pattern} (at most {ids.MAX_ID_LENGTH} characters)"
        )
    return account_id


def require_account(found, account_id):
    if found is None:
        raise CommandError(f"no account {account_id!r}")
    return found


def read_password(account_id, password_stdin, outcome="nothing changed"):
    """The new password: from stdin's first line, or asked twice on the terminal.

    Any way of not getting one (no terminal, end of input, an empty
    password, two that differ, Ctrl-C) is a :class:`CommandError` ending
    with ``outcome``.
    """
    try:
        if password_stdin:
            line = sys.stdin.readline()
            if not line:
                raise CommandError(f"standard input is empty: no password; {outcome}")
            password = line.rstrip("\r\n")
        else:
            password = ask_password(account_id, outcome)
    except KeyboardInterrupt:
        print(file=sys.stderr)  # after the ^C the terminal shows
        raise CommandError(f"interrupted; {outcome}") from None
    if not password:
        raise CommandError(f"the password is empty; {outcome}")
    return password


def ask_password(account_id, outcome):
    with warnings.catch_warnings():
        # Without a terminal getpass would read stdin, echoing: refuse instead.
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            password = getpass.getpass(f"Password for {account_id}: ")
            if getpass.getpass("Same password again: ") != password:
                raise CommandError(f"the two passwords differ; {outcome}")
        except getpass.GetPassWarning:
            raise CommandError(
                "no terminal to ask for the password on (--password-stdin "
                f"reads it from standard input); {outcome}"
            ) from None
        except EOFError:
            raise CommandError(f"no password given; {outcome}") from None
    return password
