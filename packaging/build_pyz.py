#!/usr/bin/env python3
"""Build dist/kintofs.pyz: kintofs and its dependencies in one runnable file.

    python3 packaging/build_pyz.py [--output dist/kintofs.pyz] [--no-bytecode]

The result is a Python zip application (PEP 441): copy it to a Linux machine
with CPython 3.11 or newer and run ``python3 kintofs.pyz serve``; nothing
else needs to be installed.

It holds pure Python only, because Python cannot import a compiled extension
from a zip file, and that is also what makes one file run on x86-64,
aarch64, armv7 and armv6 alike. The dependencies are those of setup.cfg's
install_requires, resolved by pip for CPython 3.11; every one is then
fetched as a pure-Python wheel, except rpds-py (compiled, needed by
jsonschema and referencing), which is replaced by packaging/pure_rpds/rpds.py.
A dependency that gains a compiled part fails the build here rather than the
start on a Raspberry Pi, and so does a kintofs module importing something
the file lacks: after building, every kintofs module is imported from the
new file by a bare interpreter (``-I -S``: no site-packages).

Building needs pip 23 or newer and access to PyPI (or to a mirror pip is set
up for).
"""

import argparse
import configparser
import json
import os
import py_compile
import shutil
import subprocess
import sys
import tempfile
import zipapp
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO / "dist" / "kintofs.pyz"
COMPILED_SUFFIXES = (".so", ".pyd", ".dylib", ".dll")

# Compiled distributions and the pure-Python module that stands in for each.
REPLACEMENTS = {"rpds-py": REPO / "packaging" / "pure_rpds" / "rpds.py"}

# The oldest Python kintofs supports: dependencies whose markers depend on
# the version are resolved for it.
PYTHON_VERSION = "3.11"

# What pip resolves against: a real platform (so that rpds-py resolves at
# all), the Raspberry Pi's.
RESOLVE_FOR = [
    "--only-binary=:all:",
    "--python-version",
    PYTHON_VERSION,
    "--implementation",
    "cp",
    "--abi",
    "cp311",
    "--platform",
    "manylinux2014_aarch64",
]

# What pip fetches: wheels tagged "py3-none-*" hold no compiled code.
# watchdog tags its pure-Python Linux wheels per architecture (the content is
# the same for every one), hence a manylinux platform next to "any".
PURE_WHEELS_ONLY = [
    "--only-binary=:all:",
    "--python-version",
    PYTHON_VERSION,
    "--implementation",
    "py",
    "--abi",
    "none",
    "--platform",
    "any",
    "--platform",
    "manylinux2014_aarch64",
]

# Imports every kintofs module, so that a missing dependency shows at build time.
IMPORT_EVERYTHING = """
import pkgutil, kintofs
for module in pkgutil.walk_packages(kintofs.__path__, "kintofs."):
    if not module.name.endswith(".__main__"):  # that one runs the command
        __import__(module.name)
"""


class BuildError(Exception):
    pass


def install_requires():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg", encoding="utf-8")
    lines = parser["options"]["install_requires"].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def pip(*args):
    # Output only on failure: pip's warnings about the local setup are noise here.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"pip {args[0]} failed:\n{result.stdout}{result.stderr}")


def resolve(work):
    """Every distribution kintofs needs at run time, as ``name==version``."""
    report = work / "resolved.json"
    # pip 23 wants --target with platform options even for a dry run.
    pip(
        "install",
        "--dry-run",
        "--quiet",
        "--ignore-installed",
        "--target",
        str(work / "unused"),
        "--report",
        str(report),
        *RESOLVE_FOR,
        *install_requires(),
    )
    installs = json.loads(report.read_text(encoding="utf-8"))["install"]
    return [f"{item['metadata']['name']}=={item['metadata']['version']}" for item in installs]


def install_dependencies(staging, pins):
    kept = [pin for pin in pins if pin.split("==")[0].lower() not in REPLACEMENTS]
    pip(
        "install",
        "--quiet",
        "--no-deps",
        "--no-compile",
        "--target",
        str(staging),
        *PURE_WHEELS_ONLY,
        *kept,
    )
    for module in REPLACEMENTS.values():
        shutil.copy(module, staging / module.name)
    # Console scripts of the dependencies (watchdog's watchmedo): not needed.
    shutil.rmtree(staging / "bin", ignore_errors=True)


def copy_kintofs(staging):
    shutil.copytree(
        REPO / "kintofs", staging / "kintofs", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )


def write_entry_point(staging):
    # zipapp's own main= template drops main()'s return value: the exit code.
    (staging / "__main__.py").write_text(
        "import sys\nfrom kintofs.cli import main\nsys.exit(main())\n", encoding="utf-8"
    )


def refuse_compiled_files(staging):
    compiled = [path for path in staging.rglob("*") if path.suffix in COMPILED_SUFFIXES]
    if compiled:
        names = ", ".join(str(path.relative_to(staging)) for path in compiled)
        raise BuildError(f"compiled files cannot run from a zip: {names}")


def precompile(staging):
    """Add a .pyc beside each .py, where zipimport looks for it.

    Python never writes bytecode into a zip, so without these every start
    compiles all modules again (twice the start-up time). The files carry
    the building interpreter's magic number: another Python version ignores
    them and compiles from the .py as usual, so the file stays universal.
    Unchecked hashes: the .py next to them never changes.
    """
    for source in staging.rglob("*.py"):
        py_compile.compile(
            str(source),
            cfile=str(source) + "c",
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )


def check_imports(output):
    """Import every kintofs module from ``output`` with no site-packages."""
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(output)!r})\n" + IMPORT_EVERYTHING,
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"{output.name} cannot import all of kintofs:\n{result.stderr}")


def build(output, compile_bytecode=True):
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kintofs-pyz-") as temp:
        work = Path(temp)
        staging = work / "app"
        staging.mkdir()
        install_dependencies(staging, resolve(work))
        copy_kintofs(staging)
        write_entry_point(staging)
        refuse_compiled_files(staging)
        if compile_bytecode:
            precompile(staging)
        # Built beside the output and renamed, so that a failed build never
        # leaves a truncated kintofs.pyz behind.
        partial = output.with_name(output.name + ".partial")
        zipapp.create_archive(staging, partial, interpreter="/usr/bin/env python3", compressed=True)
        try:
            check_imports(partial)
        except BuildError:
            partial.unlink()
            raise
        os.replace(partial, output)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        help=f"where to write the file (default {DEFAULT_OUTPUT.relative_to(REPO)})",
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="leave out the .pyc files (a third of the size, slower start)",
    )
    args = parser.parse_args(argv)
    try:
        output = build(args.output.resolve(), compile_bytecode=not args.no_bytecode)
    except BuildError as error:
        print(f"build_pyz: {error}", file=sys.stderr)
        return 1
    print(f"built {output} ({output.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
