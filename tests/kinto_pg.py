"""A real Kinto 26.5.0 on a real PostgreSQL, started for the mirror tests.

:class:`PostgresCluster` is a private cluster (Debian's ``postgresql``
package: ``/usr/lib/postgresql/<version>/bin``) in a temp folder, on a free
loopback port, its unix socket in that folder.  ``initdb`` refuses to run as
root, so as root the cluster belongs to ``nobody`` and its programs run
through ``setpriv``.

:func:`kinto_venv` is Kinto from PyPI (``kinto[postgresql]`` and
``kinto-attachment``) in a virtual environment of its own, built once and
kept in pytest's cache folder under a name holding the versions.
:class:`KintoServer` runs ``kinto migrate`` then ``kinto start`` on an ini
with the PostgreSQL storage, permission and cache backends, basic auth, and
kinto-attachment's local file backend, whose files a small static server
serves (kinto-attachment leaves that to a web server).

Each helper calls ``pytest.skip`` with the reason when what it needs is
absent; ``.ci/run`` installs PostgreSQL, so in CI they run.
"""

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import requests
from conftest import free_port

KINTO_REQUIREMENTS = ["kinto[postgresql]==26.5.0", "kinto-attachment==8.0.0"]
VENV_NAME = "kinto-26.5.0-attachment-8.0.0"
UNPRIVILEGED_USER = "nobody"


def kinto_venv(cache):
    """The bin folder of a venv holding Kinto (``cache``: pytest's ``config.cache``)."""
    folder = cache.mkdir(VENV_NAME)
    bin_dir = folder / "bin"
    done = folder / "installed"
    if done.exists():
        return str(bin_dir)
    shutil.rmtree(folder)  # a half-built one from an interrupted run
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    result = subprocess.run(
        [str(bin_dir / "pip"), "install", "-q", *KINTO_REQUIREMENTS],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"could not install {' '.join(KINTO_REQUIREMENTS)}: {result.stderr[-500:]}")
    done.write_text(" ".join(KINTO_REQUIREMENTS) + "\n")
    return str(bin_dir)


def postgres_bin_dir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)")
    return os.path.dirname(found[-1])


def wait_for(check, what, timeout=30, process=None, log_path=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited: {open(log_path).read()[-2000:]}")
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start in {timeout} s")


class PostgresCluster:
    def __init__(self):
        self.bin_dir = postgres_bin_dir()
        # Not under pytest's 0700 temp folders: the cluster's user must reach it.
        self.folder = tempfile.mkdtemp(prefix="kintofs-pg-")
        self.data = os.path.join(self.folder, "data")
        self.port = free_port()
        self.log_path = os.path.join(self.folder, "postgres.log")
        self.as_user = []
        if os.geteuid() == 0:
            user = pwd.getpwnam(UNPRIVILEGED_USER)
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self.as_user = [
                "setpriv",
                f"--reuid={user.pw_uid}",
                f"--regid={user.pw_gid}",
                "--clear-groups",
            ]
        subprocess.run(
            [*self.as_user, f"{self.bin_dir}/initdb", "-D", self.data, "-U", "postgres"]
            + ["--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [*self.as_user, f"{self.bin_dir}/postgres", "-D", self.data, "-p", str(self.port)]
            + ["-k", self.folder, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, "postgres", process=self.process, log_path=self.log_path)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ready(self):
        check = [f"{self.bin_dir}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        return subprocess.run(check).returncode == 0

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


INI = """\
[app:main]
use = egg:kinto
kinto.includes = kinto.plugins.flush kinto_attachment
kinto.storage_backend = kinto.core.storage.postgresql
kinto.storage_url = {pg}
kinto.permission_backend = kinto.core.permission.postgresql
kinto.permission_url = {pg}
kinto.cache_backend = kinto.core.cache.postgresql
kinto.cache_url = {pg}
kinto.userid_hmac_secret = {secret}
multiauth.policies = basicauth
kinto.bucket_create_principals = system.Authenticated
kinto.attachment.base_path = {files}
kinto.attachment.base_url = {files_url}
kinto.attachment.extensions = any

[server:main]
use = egg:waitress#main
host = 127.0.0.1
port = {port}

[loggers]
keys = root
[handlers]
keys = console
[formatters]
keys = plain
[logger_root]
level = WARNING
handlers = console
[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = plain
[formatter_plain]
format = %(asctime)s %(levelname)s %(name)s %(message)s
"""


class KintoServer:
    """Kinto on ``pg_url``; ``url`` ends with ``/v1``.  ``secret``: its HMAC secret."""

    def __init__(self, bin_dir, pg_url, folder, secret):
        self.port, files_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.files = os.path.join(folder, "attachments")
        os.makedirs(self.files, exist_ok=True)
        self.ini = os.path.join(folder, "kinto.ini")
        with open(self.ini, "w") as f:
            f.write(
                INI.format(
                    pg=pg_url,
                    secret=secret,
                    files=self.files,
                    files_url=f"http://127.0.0.1:{files_port}/",
                    port=self.port,
                )
            )
        kinto = os.path.join(bin_dir, "kinto")
        migrate = subprocess.run([kinto, "migrate", "--ini", self.ini], capture_output=True)
        if migrate.returncode != 0:
            raise RuntimeError(f"kinto migrate failed: {migrate.stderr.decode()[-2000:]}")
        self.log_path = os.path.join(folder, "kinto.log")
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [kinto, "start", "--ini", self.ini], stdout=log, stderr=subprocess.STDOUT
        )
        python = os.path.join(bin_dir, "python")
        self.files_server = subprocess.Popen(
            [python, "-m", "http.server", "-b", "127.0.0.1", "-d", self.files, str(files_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._ready, "kinto", process=self.process, log_path=self.log_path)

    def _ready(self):
        try:
            return requests.get(self.url + "/__heartbeat__", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def flush(self):
        requests.post(self.url + "/__flush__", timeout=30).raise_for_status()

    def stop(self):
        for process in (self.process, self.files_server):
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
