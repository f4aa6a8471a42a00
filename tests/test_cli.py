"""The ``kintofs`` command line as a user meets it: ``--version``, hints that
name the command the way it was run, one-line errors, and an ``init --admin``
that leaves nothing behind when it cannot finish.

Real processes in a temporary folder. PATH is set by each test (to a folder
of its own), since how a command is named depends on what PATH finds. The
.pyz is covered in tests/test_packaging.py, which builds one.
"""

import argparse
import fcntl
import io
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import kintofs
from kintofs import init_cmd
from kintofs.fsstore import FileSystemStore

PASSWORD = "s3cret admin pw"
CONSOLE_SCRIPT = Path(sys.executable).parent / "kintofs"


def run(command, *args, cwd, path, stdin="", new_session=False, env=None):
    """Run ``command + args`` with ``PATH=path`` and no KINTOFS_* variable but ``env``'s."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")},
        **(env or {}),
        "PATH": str(path),
    }
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=new_session,
    )


def module(*args, cwd, path, **kwargs):
    return run([sys.executable, "-m", "kintofs"], *args, cwd=cwd, path=path, **kwargs)


def listing(root):
    """Every path under ``root``, to compare before and after."""
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*"))


@pytest.fixture
def place(tmp_path):
    """A working folder ``work`` and an empty PATH folder ``bin`` in tmp_path."""
    (tmp_path / "work").mkdir()
    (tmp_path / "bin").mkdir()
    return argparse.Namespace(root=tmp_path, work=tmp_path / "work", bin=tmp_path / "bin")


# ---------------------------------------------------------------------------
# --version
# ---------------------------------------------------------------------------


def test_version_from_the_module(place):
    result = module("--version", cwd=place.work, path=place.bin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kintofs {kintofs.__version__}\n"


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="kintofs is not pip-installed here")
def test_version_from_the_console_script(place):
    result = run([str(CONSOLE_SCRIPT)], "--version", cwd=place.work, path=place.bin)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"kintofs {kintofs.__version__}\n"


# ---------------------------------------------------------------------------
# Hints name the command as it was run
# ---------------------------------------------------------------------------


def start_hint(result):
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def test_hints_name_python_m_kintofs(place):
    config = place.work / "kintofs.toml"
    result = module("init", cwd=place.work, path=place.bin)
    assert start_hint(result) == f"start with: {sys.executable} -m kintofs serve --config {config}"
    # The interpreter by its bare name when that is what PATH finds.
    on_path = f"{Path(sys.executable).parent}{os.pathsep}{place.bin}"
    again = module("init", "--config", "b.toml", cwd=place.work, path=on_path)
    assert start_hint(again) == (
        f"start with: {Path(sys.executable).name} -m kintofs serve --config {place.work / 'b.toml'}"
    )
    usage = module("init", "--help", cwd=place.work, path=on_path).stdout
    # argparse wraps the usage line when the program name is long: compare words.
    assert usage.split()[:5] == ["usage:", Path(sys.executable).name, "-m", "kintofs", "init"]


def test_hints_in_account_errors(place):
    args = ["account", "add", "alice", "--password-stdin", "--config", os.devnull]
    accounts = {"KINTOFS_PLUGINS": "accounts", "KINTOFS_FSYNC": "false"}
    first = module(*args, cwd=place.work, path=place.bin, stdin="pw\n", env=accounts)
    assert first.returncode == 0, first.stderr
    again = module(*args, cwd=place.work, path=place.bin, stdin="pw\n", env=accounts)
    assert again.returncode == 1
    assert again.stderr == (
        "kintofs account add: account 'alice' already exists (change its "
        f"password with: {sys.executable} -m kintofs account passwd alice)\n"
    )


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="kintofs is not pip-installed here")
def test_hints_name_the_console_script(place):
    # Not on PATH: by the path it was run with; on PATH: plain `kintofs`.
    by_path = run([str(CONSOLE_SCRIPT)], "init", cwd=place.work, path=place.bin)
    assert start_hint(by_path).startswith(f"start with: {CONSOLE_SCRIPT} serve --config ")
    on_path = run(
        ["kintofs"],
        "init",
        "--config",
        "b.toml",
        cwd=place.work,
        path=f"{CONSOLE_SCRIPT.parent}{os.pathsep}{place.bin}",
    )
    assert start_hint(on_path) == f"start with: kintofs serve --config {place.work / 'b.toml'}"


def test_a_bad_argument_is_one_line(place):
    for args, command in (
        (["init", "--port", "x"], ["init"]),
        (["nonsense"], []),
        ([], []),
        (["account", "add"], ["account", "add"]),
    ):
        result = module(*args, cwd=place.work, path=place.bin)
        assert result.returncode == 2, args
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert line.startswith("kintofs: "), line
        help_command = " ".join([sys.executable, "-m", "kintofs", *command, "--help"])
        assert line.endswith(f"(see: {help_command})"), line
    assert listing(place.work) == []


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--data-dir", "missing"],
        ["backup", "out", "--data-dir", "missing"],
        ["backup", "file/out.tar.gz", "--data-dir", "data"],
        ["restore", "file", "--data-dir", "restored"],
        ["restore", "missing", "--data-dir", "restored"],
        ["account", "list", "--data-dir", "missing"],
        ["account", "del", "alice", "--data-dir", "missing"],
        ["init", "--data-dir", "file"],
        ["init", "--config", "file/kintofs.toml"],
        ["serve", "--config", "missing.toml"],
        ["check", "--config", "."],
    ],
)
def test_operator_mistakes_are_one_line(place, args):
    (place.work / "file").write_text("")
    assert module("init", "--config", "base.toml", cwd=place.work, path=place.bin).returncode == 0
    before = listing(place.work)
    result = module(*args, cwd=place.work, path=place.bin)
    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith("kintofs"), line
    assert listing(place.work) == before


# ---------------------------------------------------------------------------
# init --admin without a password creates nothing
# ---------------------------------------------------------------------------


def test_init_admin_without_a_terminal_creates_nothing(place):
    before = listing(place.root)
    # No terminal (a new session has none) and no --password-stdin: stdin is not read.
    result = module(
        "init",
        "--admin",
        "admin",
        cwd=place.work,
        path=place.bin,
        stdin=f"{PASSWORD}\n{PASSWORD}\n",
        new_session=True,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "kintofs init: no terminal to ask for the password on "
        "(--password-stdin reads it from standard input); "
        "nothing was created\n"
    )
    assert listing(place.root) == before


@pytest.mark.parametrize(
    "stdin, message",
    [
        ("", "standard input is empty: no password"),
        ("\n", "the password is empty"),
        ("\r\nsecond line\n", "the password is empty"),
    ],
)
def test_init_admin_without_a_password_on_stdin_creates_nothing(place, stdin, message):
    before = listing(place.root)
    result = module(
        "init",
        "--admin",
        "admin",
        "--password-stdin",
        "--data-dir",
        "lib/k/data",
        cwd=place.work,
        path=place.bin,
        stdin=stdin,
    )
    assert result.returncode == 1
    assert result.stderr == f"kintofs init: {message}; nothing was created\n"
    assert listing(place.root) == before


class Terminal:
    """kintofs run with a pseudo-terminal as its controlling terminal."""

    def __init__(self, args, cwd, path):
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
        env["PATH"] = str(path)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kintofs", *args],
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        self.output = b""

    def expect(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError(f"no {text!r} in {self.output!r}")
        self.output = self.output.split(text.encode(), 1)[1]

    def send(self, text):
        os.write(self.master, text.encode())

    def finish(self, timeout=30):
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        os.close(self.master)
        return self.process.wait(timeout), self.output.decode().replace("\r\n", "\n")

    def _read(self, timeout):
        if timeout <= 0 or not select.select([self.master], [], [], timeout)[0]:
            return False
        try:
            chunk = os.read(self.master, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        self.output += chunk
        return bool(chunk)


@pytest.mark.parametrize(
    "answers, message",
    [
        ([f"{PASSWORD}\n", "something else\n"], "the two passwords differ"),
        (["\n", "\n"], "the password is empty"),
        (["\x04"], "no password given"),  # Ctrl-D
        (["\x03"], "interrupted"),  # Ctrl-C
    ],
)
def test_init_admin_asked_on_the_terminal_without_a_password_creates_nothing(
    place, answers, message
):
    before = listing(place.root)
    terminal = Terminal(["init", "--admin", "admin"], cwd=place.work, path=place.bin)
    for prompt, answer in zip(
        ["Password for admin: ", "Same password again: "], answers, strict=False
    ):
        terminal.expect(prompt)
        terminal.send(answer)
    status, output = terminal.finish()
    assert status == 1, output
    assert f"kintofs init: {message}; nothing was created\n" in output
    assert "Traceback" not in output
    assert listing(place.root) == before


def test_init_admin_asked_on_the_terminal(place):
    terminal = Terminal(["init", "--admin", "admin"], cwd=place.work, path=place.bin)
    for prompt in ("Password for admin: ", "Same password again: "):
        terminal.expect(prompt)
        terminal.send(f"{PASSWORD}\n")
    status, output = terminal.finish()
    assert status == 0, output
    assert "'admin' administers every account" in output
    assert (place.work / "data" / "accounts" / "admin.json").exists()


def test_init_that_cannot_write_its_config_leaves_nothing(place):
    # A name the staging file beside it cannot have (too long): this fails
    # after the data directory and its secret were made.
    before = listing(place.root)
    result = module(
        "init",
        "--admin",
        "admin",
        "--password-stdin",
        "--data-dir",
        "lib/data",
        "--config",
        "k" * 245 + ".toml",
        cwd=place.work,
        path=place.bin,
        stdin=PASSWORD + "\n",
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("kintofs init: cannot write ") and "too long" in line
    assert listing(place.root) == before


def fail_to_publish(*args):
    raise init_cmd.InitError("cannot write the config: injected")


def init_args(tmp_path, **changes):
    args = dict(
        config=str(tmp_path / "kintofs.toml"),
        data_dir=str(tmp_path / "data"),
        bind="127.0.0.1",
        port=8888,
        admin="admin",
        password_stdin=True,
    )
    return argparse.Namespace(**{**args, **changes})


def test_init_failing_last_undoes_a_new_data_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(init_cmd, "publish_config", fail_to_publish)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    with pytest.raises(init_cmd.InitError, match="injected"):
        init_cmd.initialise(init_args(tmp_path, config=str(tmp_path / "etc/k/kintofs.toml")))
    assert listing(tmp_path) == []


def test_init_failing_last_keeps_an_existing_data_dir_as_it_was(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    (data / "notes.txt").write_text("someone's")
    before = listing(tmp_path)
    monkeypatch.setattr(init_cmd, "publish_config", fail_to_publish)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    with pytest.raises(init_cmd.InitError, match="injected"):
        init_cmd.initialise(init_args(tmp_path))
    # The account was deleted again; the folder of the accounts list and
    # the lock file may stay, the secret and the format file do not.
    left = set(listing(tmp_path)) - set(before)
    assert {"data/_userid_hmac_secret", "data/_format.json"}.isdisjoint(left)
    assert {name.split("/")[1] for name in left} <= {"accounts", "_lock"}
    assert os.stat(data).st_mode & 0o777 == 0o755
    assert FileSystemStore(data).get((), "account", "admin") is None
