"""The ``kintofs`` command."""

import argparse
import os
import shlex
import shutil
import sys
import zipimport

from . import __version__
from .config import ConfigError, load_settings


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in one line that names the help to read."""

    def error(self, message):
        self.exit(2, f"kintofs: {message} (see: {self.prog} --help)\n")


def main(argv=None):
    prog = program_name()
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--version", action="version", version=f"kintofs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP daemon")
    serve.add_argument("--config", help="TOML config file (default: ./kintofs.toml if present)")
    serve.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8888)")
    serve.add_argument("--data-dir", help="data folder (default ./data)")
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] != ["serve"]:
        # The daemon does without the other commands' code: what it imports
        # stays in its memory as long as it runs.
        add_other_commands(commands)
    args = parser.parse_args(arguments)
    args.prog = prog  # for the hints that name a command to run
    if args.command != "serve":
        try:
            return run_command(args)
        except KeyboardInterrupt:
            print(f"\nkintofs {args.command}: interrupted", file=sys.stderr)
            return 130
        except OSError as error:  # what the command did not foresee: still one line
            print(f"kintofs {args.command}: {error}", file=sys.stderr)
            return 1

    try:
        settings = load_settings(
            args.config, overrides={"bind": args.bind, "port": args.port, "data_dir": args.data_dir}
        )
    except ConfigError as error:
        print(f"kintofs: {error}", file=sys.stderr)
        return 2
    from .server import serve as run_server

    try:
        return run_server(settings)
    except ConfigError as error:  # a plugin refusing the settings, as Kinto does
        print(f"kintofs: {error}", file=sys.stderr)
        return 2


def add_other_commands(commands):
    from . import accounts_cli, init_cmd, mirror, ops_cli, watch_cli

    init_cmd.add_init_parser(commands)
    ops_cli.add_commands(commands)  # check, backup, restore
    accounts_cli.add_parser(commands)
    watch_cli.add_parser(commands)
    mirror.add_parsers(commands)  # push, pull


def run_command(args):
    from . import accounts_cli, init_cmd, mirror, ops_cli, watch_cli

    if args.command in ("check", "backup", "restore"):
        return ops_cli.run(args)
    if args.command == "init":
        return init_cmd.run_init(args)
    if args.command == "watch":
        return watch_cli.run(args)
    if args.command in ("push", "pull"):
        return mirror.run(args)
    return accounts_cli.run(args)


# ---------------------------------------------------------------------------
# How the user ran kintofs
# ---------------------------------------------------------------------------


def program_name():
    """The command that ran kintofs, as the user would type it again.

    ``kintofs`` (the console script, or the .pyz linked on PATH under that
    name), ``.venv/bin/kintofs`` (a script not found on PATH under its own
    name), ``python3 -m kintofs`` or ``python3 dist/kintofs.pyz`` (with the
    interpreter and the file as they were given). Used for argparse's
    ``prog`` and for every hint naming a command to run.
    """
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    script = sys.argv[0] if sys.argv else ""
    if spec is not None and spec.name == "kintofs.__main__":
        return f"{interpreter()} -m kintofs"
    if (
        spec is not None
        and spec.name == "__main__"
        and script
        and isinstance(spec.loader, zipimport.zipimporter)
    ):
        # A zip application: run by a name on PATH (`kintofs`, a symlink to
        # it), or else by an interpreter given the file.
        return found_on_path(script) or f"{interpreter()} {shlex.quote(script)}"
    if spec is None and script and getattr(main_module, "main", None) is main:
        return found_on_path(script) or shlex.quote(script)  # the console script
    return "kintofs"  # called from other code


def interpreter():
    """The Python that runs us, as it was started (``python3``, ``.venv/bin/python``)."""
    started_as = sys.orig_argv[0] if sys.orig_argv else ""
    if not started_as:
        return "python3"
    if os.sep not in started_as:
        return shlex.quote(started_as)  # a name, looked up on PATH
    return found_on_path(started_as) or shlex.quote(started_as)


def found_on_path(path):
    """The bare name of ``path`` if PATH finds that same file under it, else None.

    The same directory entry, not merely the same file: a virtual
    environment's ``python`` is a symlink whose target lacks its packages.
    """
    name = os.path.basename(path)
    found = shutil.which(name)
    try:
        if found and os.path.samefile(
            os.path.dirname(os.path.abspath(found)), os.path.dirname(os.path.abspath(path))
        ):
            return name
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
