"""The ``kintofs`` command."""
import argparse
import sys

from .config import ConfigError, load_settings


def main(argv=None):
    parser = argparse.ArgumentParser(prog="kintofs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP daemon")
    serve.add_argument("--config", help="TOML config file (default: ./kintofs.toml if present)")
    serve.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8888)")
    serve.add_argument("--data-dir", help="data folder (default ./data)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings(args.config, overrides={
            "bind": args.bind, "port": args.port, "data_dir": args.data_dir})
    except ConfigError as error:
        print(f"kintofs: {error}", file=sys.stderr)
        return 2
    from .server import serve as run_server
    return run_server(settings)


if __name__ == "__main__":
    sys.exit(main())
