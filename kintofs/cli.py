"""The ``kintofs`` command."""
import argparse
import sys

from . import accounts_cli
from .config import ConfigError, load_settings
from .init_cmd import add_init_parser, run_init
from .ops_cli import add_commands as add_operator_commands, run as run_operator_command


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kintofs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP daemon")
    serve.add_argument("--config", help="TOML config file (default: ./kintofs.toml if present)")
    serve.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8888)")
    serve.add_argument("--data-dir", help="data folder (default ./data)")
    add_init_parser(commands)
    add_operator_commands(commands)  # check, backup, restore
    accounts_cli.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command in ("check", "backup", "restore"):
        return run_operator_command(args)
    if args.command == "init":
        return run_init(args)
    if args.command == "account":
        return accounts_cli.run(args)

    try:
        settings = load_settings(args.config, overrides={
            "bind": args.bind, "port": args.port, "data_dir": args.data_dir})
    except ConfigError as error:
        print(f"kintofs: {error}", file=sys.stderr)
        return 2
    from .server import serve as run_server
    try:
        return run_server(settings)
    except ConfigError as error:  # a plugin refusing the settings, as Kinto does
        print(f"kintofs: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
