"""Packaging for self-hosters: the one-file build, its rpds stand-in, the
systemd unit and the Dockerfile.

The one-file tests build dist/kintofs.pyz's twin in a temporary folder (pip
fetches the dependencies: this needs PyPI or a mirror) and run it with a bare
interpreter, ``-I -S``: no site-packages, so every import must come from the
file.
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import rpds
from conftest import ALICE, Api, Daemon, assert_status
from hypothesis import given, settings
from hypothesis import strategies as st

import kintofs

REPO = Path(__file__).resolve().parent.parent
PACKAGING = REPO / "packaging"
BARE = [sys.executable, "-I", "-S"]


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_pyz = load_module(PACKAGING / "build_pyz.py", "build_pyz")
pure_rpds = load_module(PACKAGING / "pure_rpds" / "rpds.py", "pure_rpds")


# ---------------------------------------------------------------------------
# The pure-Python rpds behaves like rpds-py
# ---------------------------------------------------------------------------

keys = st.sampled_from(["a", "b", "c", "d", 1, 2, (1, "x")])
values = st.integers(-3, 3) | st.text(max_size=2)


def outcome(call):
    """What a call gives, in a form comparable across the two libraries."""
    try:
        result = call()
    except (KeyError, IndexError, TypeError) as error:
        return ("raises", type(error).__name__)
    return ("returns", result)


def apply_to_both(real, pure, name, args):
    """Call ``name`` on both: they must agree; return the (new) pair."""
    before = snapshot(pure)
    real_out = outcome(lambda: getattr(real, name)(*args))
    pure_out = outcome(lambda: getattr(pure, name)(*args))
    assert real_out[0] == pure_out[0], (name, args, real_out, pure_out)
    # Persistent: an operation returns a new structure, the old one is unchanged.
    assert snapshot(pure) == before, (name, args)
    return (real_out[1], pure_out[1]) if real_out[0] == "returns" else (real, pure)


def snapshot(structure):
    return list(structure.items()) if hasattr(structure, "items") else list(structure)


def same_map(real, pure):
    assert dict(real.items()) == dict(pure.items())
    assert len(real) == len(pure) and set(real) == set(pure)
    # Equal maps hash alike (the values themselves need not match rpds-py's).
    assert hash(pure) == hash(pure_rpds.HashTrieMap(dict(reversed(list(pure.items())))))
    assert eval(repr(pure), {"HashTrieMap": dict}) == dict(real.items())


map_ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), keys, values),
        st.tuples(st.just("remove"), keys),
        st.tuples(st.just("discard"), keys),
        st.tuples(st.just("update"), st.dictionaries(keys, values, max_size=3)),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, values, max_size=4), map_ops)
def test_pure_hash_trie_map_matches_rpds(start, operations):
    real, pure = rpds.HashTrieMap(start), pure_rpds.HashTrieMap(start)
    for name, *args in operations:
        real, pure = apply_to_both(real, pure, name, args)
        same_map(real, pure)
        for key in ("a", 1, "zz"):
            assert (key in real) == (key in pure)
            assert real.get(key, "missing") == pure.get(key, "missing")
    assert (real == rpds.HashTrieMap(start)) == (pure == pure_rpds.HashTrieMap(start))
    assert (pure == dict(pure.items())) is (real == dict(real.items())) is False
    assert pure_rpds.HashTrieMap.convert(pure) is pure


set_ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), keys),
        st.tuples(st.just("remove"), keys),
        st.tuples(st.just("discard"), keys),
        st.tuples(st.just("update"), st.frozensets(keys, max_size=3)),
    ),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(st.frozensets(keys, max_size=4), set_ops, st.frozensets(keys, max_size=4))
def test_pure_hash_trie_set_matches_rpds(start, operations, other):
    real, pure = rpds.HashTrieSet(start), pure_rpds.HashTrieSet(start)
    for name, *args in operations:
        real, pure = apply_to_both(real, pure, name, args)
        assert set(real) == set(pure)
        assert hash(pure) == hash(pure_rpds.HashTrieSet(reversed(list(pure))))
    real_other, pure_other = rpds.HashTrieSet(other), pure_rpds.HashTrieSet(other)
    for operator in ("__or__", "__and__", "__sub__", "__xor__", "__le__", "__lt__", "__eq__"):
        real_result = getattr(real, operator)(real_other)
        pure_result = getattr(pure, operator)(pure_other)
        assert (set(real_result) if not isinstance(real_result, bool) else real_result) == (
            set(pure_result) if not isinstance(pure_result, bool) else pure_result
        ), operator
    assert set(real.union(real_other)) == set(pure.union(pure_other))
    assert set(real.intersection(real_other)) == set(pure.intersection(pure_other))
    assert (real == set(real)) is (pure == set(pure)) is True


@settings(max_examples=150, deadline=None)
@given(
    st.lists(values, max_size=4),
    st.lists(
        st.one_of(
            st.tuples(st.just("push_front"), values),
            st.tuples(st.just("drop_first")),
            st.tuples(st.just("rest")),
        ),
        max_size=10,
    ),
)
def test_pure_list_matches_rpds(start, operations):
    real, pure = rpds.List(start), pure_rpds.List(start)
    for name, *args in operations:
        if name == "rest":
            real, pure = real.rest, pure.rest
        else:
            real, pure = apply_to_both(real, pure, name, args)
        assert list(real) == list(pure) and list(reversed(real)) == list(reversed(pure))
        assert len(real) == len(pure) and hash(pure) == hash(pure_rpds.List(list(pure)))
        assert outcome(lambda real=real: real.first) == outcome(lambda pure=pure: pure.first)
    assert (pure == pure_rpds.List(list(pure))) and not (pure == list(pure))
    assert repr(pure) == repr(real)
    assert pure_rpds.List(1, 2, 3) == pure_rpds.List([1, 2, 3])


# ---------------------------------------------------------------------------
# The one-file build
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyz(tmp_path_factory):
    output = tmp_path_factory.mktemp("pyz") / "kintofs.pyz"
    return build_pyz.build(output)


def test_the_bare_interpreter_has_no_dependencies():
    # Otherwise the tests below could pass on site-packages instead of the file.
    for module in ("bottle", "cheroot", "jsonschema", "kintofs"):
        result = subprocess.run([*BARE, "-c", f"import {module}"], capture_output=True)
        assert result.returncode != 0, f"{module} is importable without the pyz"


def test_pyz_holds_no_compiled_code_and_the_rpds_stand_in(pyz):
    names = zipfile.ZipFile(pyz).namelist()
    assert not [name for name in names if name.endswith((".so", ".pyd", ".dylib"))]
    assert "rpds.py" in names and not [name for name in names if name.startswith("rpds_py")]
    for needed in (
        "__main__.py",
        "kintofs/cli.py",
        "bottle.py",
        "cheroot/wsgi.py",
        "jsonschema/__init__.py",
        "referencing/__init__.py",
        "watchdog/__init__.py",
    ):
        assert needed in names
    assert pyz.read_bytes().startswith(b"#!/usr/bin/env python3\n")


def test_pyz_keeps_exit_codes_and_messages(pyz, tmp_path):
    result = subprocess.run(
        [*BARE, str(pyz), "serve", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "config file not found" in result.stderr
    assert "Traceback" not in result.stderr


def run_from(cwd, command, *args, path, stdin=""):
    """Run ``command`` in ``cwd`` with ``PATH=path`` (how hints name kintofs depends on it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    env["PATH"] = str(path)
    return subprocess.run(
        [*command, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_pyz_version(pyz, tmp_path):
    result = run_from(tmp_path, [*BARE, str(pyz)], "--version", path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kintofs {kintofs.__version__}\n"


def test_pyz_hints_name_the_file_as_it_was_run(pyz, tmp_path):
    (tmp_path / "dist").mkdir()
    shutil.copy(pyz, tmp_path / "dist" / "kintofs.pyz")
    empty = tmp_path / "empty"
    empty.mkdir()
    # python3 dist/kintofs.pyz ...: the interpreter and the file as given.
    started = [sys.executable, "dist/kintofs.pyz"]
    result = run_from(tmp_path, [*BARE, "dist/kintofs.pyz"], "init", path=empty)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        f"start with: {' '.join(started)} serve --config {tmp_path / 'kintofs.toml'}"
    )
    usage = run_from(tmp_path, [*BARE, "dist/kintofs.pyz"], "init", "--help", path=empty).stdout
    # argparse wraps the usage line when the interpreter's path is long: compare words.
    assert usage.split()[:4] == ["usage:", *started, "init"]
    bad = run_from(tmp_path, [*BARE, "dist/kintofs.pyz"], "init", "--port", "x", path=empty)
    assert bad.returncode == 2
    assert bad.stderr == (
        f"kintofs: argument --port: invalid int value: 'x' (see: {' '.join(started)} init --help)\n"
    )

    # Linked on PATH as `kintofs` (as the README installs it): plain `kintofs`.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.chmod(tmp_path / "dist" / "kintofs.pyz", 0o755)
    (bin_dir / "kintofs").symlink_to(tmp_path / "dist" / "kintofs.pyz")
    (bin_dir / "python3").symlink_to(sys.executable)  # for its #!/usr/bin/env python3
    linked = run_from(tmp_path, ["kintofs"], "init", "--config", "b.toml", path=bin_dir)
    assert linked.returncode == 0, linked.stderr
    assert linked.stdout.splitlines()[-1] == (
        f"start with: kintofs serve --config {tmp_path / 'b.toml'}"
    )


def test_pyz_init_admin_without_a_password_creates_nothing(pyz, tmp_path):
    result = run_from(
        tmp_path,
        [*BARE, str(pyz)],
        "init",
        "--admin",
        "admin",
        "--password-stdin",
        path=tmp_path,
        stdin="",
    )
    assert result.returncode == 1
    assert result.stderr == (
        "kintofs init: standard input is empty: no password; nothing was created\n"
    )
    assert os.listdir(tmp_path) == []


def test_pyz_serves_real_requests_with_a_bare_interpreter(pyz, tmp_path):
    daemon = Daemon(tmp_path / "data", command=[*BARE, str(pyz)])
    try:
        api = Api(daemon, ALICE)
        assert_status(api.put("/buckets/notes"), 201)
        assert_status(api.put("/buckets/notes/collections/todo"), 201)
        created = assert_status(
            api.post(
                "/buckets/notes/collections/todo/records", json={"data": {"title": "Buy milk"}}
            ),
            201,
        ).json()
        record_id = created["data"]["id"]
        fetched = assert_status(
            api.get(f"/buckets/notes/collections/todo/records/{record_id}"), 200
        ).json()
        assert fetched["data"]["title"] == "Buy milk"
        listed = assert_status(api.get("/buckets/notes/collections/todo/records"), 200).json()
        assert [record["id"] for record in listed["data"]] == [record_id]
        on_disk = tmp_path / "data/buckets/notes/collections/todo/records" / f"{record_id}.json"
        assert json.loads(on_disk.read_text())["title"] == "Buy milk"
        # A collection schema goes through jsonschema and the rpds stand-in.
        assert_status(
            api.put("/buckets/notes/collections/bad", json={"data": {"schema": {"type": 12}}}), 400
        )
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(20) == 0
    finally:
        daemon.stop()


def test_pyz_validates_records_against_a_collection_schema(pyz, tmp_path):
    daemon = Daemon(
        tmp_path / "data",
        command=[*BARE, str(pyz)],
        experimental_collection_schema_validation="true",
    )
    try:
        api = Api(daemon, ALICE)
        if "schema" not in api.get("/").json()["capabilities"]:
            pytest.skip("collection schema validation is not in this kintofs yet")
        schema = {
            "type": "object",
            "required": ["title"],
            "definitions": {"title": {"type": "string"}},
            "properties": {"title": {"$ref": "#/definitions/title"}},
        }
        assert_status(api.put("/buckets/b"), 201)
        assert_status(api.put("/buckets/b/collections/c", json={"data": {"schema": schema}}), 201)
        assert_status(
            api.post("/buckets/b/collections/c/records", json={"data": {"title": "ok"}}), 201
        )
        refused = api.post("/buckets/b/collections/c/records", json={"data": {"title": 3}})
        assert_status(refused, 400)
        assert refused.json()["errno"] == 107
    finally:
        daemon.stop()


def test_dependencies_come_from_setup_cfg():
    requires = build_pyz.install_requires()
    names = {re.match(r"[A-Za-z0-9._-]+", line).group(0).lower() for line in requires}
    assert {"bottle", "cheroot", "jsonschema", "watchdog"} <= names


# ---------------------------------------------------------------------------
# systemd unit and Dockerfile
# ---------------------------------------------------------------------------


def unit_directives():
    directives = {}
    for line in (PACKAGING / "kintofs.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            directives.setdefault(key, []).append(value)
    return directives


def test_systemd_unit_is_hardened():
    unit = unit_directives()
    for key, value in {
        "StateDirectory": "kintofs",
        "StateDirectoryMode": "0700",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/kintofs",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "Restart": "on-failure",
        "KillSignal": "SIGTERM",
        "User": "kintofs",
        "UMask": "0077",
    }.items():
        assert unit.get(key) == [value], key
    assert unit["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "TimeoutStopSec" in unit and unit["CapabilityBoundingSet"] == [""]
    # The data directory the daemon serves is the one systemd makes writable.
    assert "--data-dir /var/lib/kintofs" in unit["ExecStart"][0]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_unit_verifies():
    result = subprocess.run(
        ["systemd-analyze", "verify", str(PACKAGING / "kintofs.service")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    # Unknown or misspelt directives are warnings, not errors: refuse them too.
    assert "kintofs.service" not in result.stderr, result.stderr


def test_dockerfile_runs_unprivileged_with_a_volume_and_a_healthcheck():
    text = (PACKAGING / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    assert re.search(r"^USER kintofs$", text, re.MULTILINE)
    assert 'VOLUME ["/data"]' in text
    assert "KINTOFS_BIND=0.0.0.0" in text and "KINTOFS_DATA_DIR=/data" in text
    healthcheck = re.search(r"^HEALTHCHECK (?:.*\\\n)*.*", text, re.MULTILINE).group(0)
    assert "/v1/__heartbeat__" in healthcheck
    assert re.search(r'^CMD \["kintofs", "serve"\]$', text, re.MULTILINE)
    # What the Dockerfile copies is what its .dockerignore lets through.
    ignore = (PACKAGING / "Dockerfile.dockerignore").read_text()
    for copied in re.findall(r"^COPY (.+) /src/", text, re.MULTILINE):
        for name in copied.split():
            assert f"!{name}" in ignore
