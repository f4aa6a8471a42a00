"""``kintofs init``, run as a real command, then a daemon started on its config."""

import os
import re
import stat
import subprocess
import sys
import tomllib

import pytest
from conftest import Api, Daemon, assert_error, assert_status, basicauth_id

from kintofs.config import load_settings

PASSWORD = "s3cret admin pw"


def kintofs(*args, cwd, stdin=""):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KINTOFS_")}
    return subprocess.run(
        [sys.executable, "-m", "kintofs", *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def read_config(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def test_init_writes_a_private_config_with_a_fresh_secret(tmp_path):
    result = kintofs("init", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = read_config(tmp_path / "kintofs.toml")
    assert re.fullmatch(r"[0-9a-f]{64}", config["userid_hmac_secret"])
    assert config["data_dir"] == str(tmp_path / "data")
    assert (config["bind"], config["port"]) == ("127.0.0.1", 8888)
    assert mode(tmp_path / "kintofs.toml") == 0o600
    assert mode(tmp_path / "data") == 0o700
    # Every key written is a real setting, and the file loads as written.
    settings = load_settings(tmp_path / "kintofs.toml", environ={})
    assert settings["userid_hmac_secret"] == config["userid_hmac_secret"]
    assert settings["plugins"] == [] and settings["auth_policies"] == ["basicauth"]
    # Only the config is left beside it: no staging file.
    assert sorted(os.listdir(tmp_path)) == ["data", "kintofs.toml"]

    other = tmp_path / "other"
    other.mkdir()
    assert kintofs("init", cwd=other).returncode == 0
    assert read_config(other / "kintofs.toml")["userid_hmac_secret"] != config["userid_hmac_secret"]


def test_init_refuses_to_overwrite_a_config(tmp_path):
    (tmp_path / "kintofs.toml").write_text("port = 9000\n")
    result = kintofs("init", cwd=tmp_path)
    assert result.returncode != 0
    assert "already exists" in result.stderr and "not overwriting" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "kintofs.toml").read_text() == "port = 9000\n"
    assert not (tmp_path / "data").exists()


def test_init_refuses_a_second_time_and_keeps_the_secret(tmp_path):
    assert kintofs("init", cwd=tmp_path).returncode == 0
    before = (tmp_path / "kintofs.toml").read_bytes()
    again = kintofs("init", "--port", "9999", cwd=tmp_path)
    assert again.returncode == 1
    assert (tmp_path / "kintofs.toml").read_bytes() == before


def test_init_with_options_and_a_bad_port(tmp_path):
    target = tmp_path / "etc" / "kintofs" / "kintofs.toml"
    result = kintofs(
        "init",
        "--config",
        str(target),
        "--data-dir",
        str(tmp_path / "lib" / "k"),
        "--bind",
        "0.0.0.0",
        "--port",
        "9123",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config = read_config(target)
    assert (config["bind"], config["port"]) == ("0.0.0.0", 9123)
    assert config["data_dir"] == str(tmp_path / "lib" / "k")

    bad = kintofs("init", "--config", "x.toml", "--port", "0", cwd=tmp_path)
    assert bad.returncode == 1 and "port" in bad.stderr
    assert not (tmp_path / "x.toml").exists()


def test_init_tightens_an_existing_data_dir_and_keeps_its_secret(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    first = kintofs("init", "--config", "a.toml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert mode(data) == 0o700
    # A second config for the same data keeps the secret its user ids were made with.
    assert kintofs("init", "--config", "b.toml", cwd=tmp_path).returncode == 0
    assert (
        read_config(tmp_path / "a.toml")["userid_hmac_secret"]
        == read_config(tmp_path / "b.toml")["userid_hmac_secret"]
    )


def test_init_secret_is_the_one_the_daemon_uses(tmp_path):
    assert kintofs("init", cwd=tmp_path).returncode == 0
    config = tmp_path / "kintofs.toml"
    secret = read_config(config)["userid_hmac_secret"]
    daemon = Daemon(tmp_path / "data", config=config, userid_hmac_secret=None)
    try:
        hello = assert_status(Api(daemon, ("alice", "pw")).get("/"), 200).json()
        assert hello["user"]["id"] == basicauth_id(("alice", "pw"), secret)
    finally:
        daemon.stop()


def test_init_creates_the_first_admin_account(tmp_path):
    result = kintofs(
        "init", "--admin", "admin", "--password-stdin", cwd=tmp_path, stdin=PASSWORD + "\n"
    )
    assert result.returncode == 0, result.stderr
    config = read_config(tmp_path / "kintofs.toml")
    assert config["plugins"] == ["accounts"]
    assert config["account_write_principals"] == ["account:admin"]
    assert mode(tmp_path / "data" / "accounts" / "admin.json") == 0o600

    daemon = Daemon(
        tmp_path / "data", config=tmp_path / "kintofs.toml", userid_hmac_secret=None, plugins=None
    )
    try:
        admin = Api(daemon, ("admin", PASSWORD))
        assert assert_status(admin.get("/"), 200).json()["user"]["id"] == "account:admin"
        # The administrator creates the next account; that one logs in.
        assert_status(admin.put("/accounts/bob", json={"data": {"password": "bob-pw"}}), 201)
        bob = Api(daemon, ("bob", "bob-pw"))
        assert assert_status(bob.get("/"), 200).json()["user"]["id"] == "account:bob"
        # Accounts only: any other user name and password is refused.
        assert_error(Api(daemon, ("eve", "x")).put("/buckets/b"), 401, 104)
        assert_error(Api(daemon, ("admin", "wrong")).get("/buckets"), 401, 104)
    finally:
        daemon.stop()


@pytest.mark.parametrize("stdin, problem", [("\n", "empty"), ("", "empty")])
def test_init_admin_without_a_password_creates_nothing(tmp_path, stdin, problem):
    result = kintofs("init", "--admin", "admin", "--password-stdin", cwd=tmp_path, stdin=stdin)
    assert result.returncode == 1
    assert problem in result.stderr and "nothing was created" in result.stderr
    # Asked before anything is made: no config, no data directory, no secret.
    # (tests/test_cli.py covers the other ways of not giving a password.)
    assert os.listdir(tmp_path) == []
    # Nothing was half-done: init runs again.
    retry = kintofs(
        "init", "--admin", "admin", "--password-stdin", cwd=tmp_path, stdin=PASSWORD + "\n"
    )
    assert retry.returncode == 0, retry.stderr


def test_init_refuses_an_invalid_admin_name_before_writing(tmp_path):
    result = kintofs(
        "init", "--admin", "../root", "--password-stdin", cwd=tmp_path, stdin=PASSWORD + "\n"
    )
    assert result.returncode == 1
    assert "not a valid account id" in result.stderr
    assert os.listdir(tmp_path) == []
