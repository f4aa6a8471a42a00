"""Tests of kintofs.config.load_settings, and of the settings documentation."""

import os
import re
from pathlib import Path

import pytest

from kintofs.config import DEFAULTS, ConfigError, Settings, load_settings

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "kintofs.toml"
DOCS = REPO / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def in_empty_dir(tmp_path, monkeypatch):
    """Run each test in an empty directory, so no ./kintofs.toml is picked up."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_config(tmp_path, text, name="kintofs.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(config_path=None, overrides=None, environ=None):
    """load_settings with an empty environment unless one is given."""
    return load_settings(config_path, overrides, {} if environ is None else environ)


# ---------------------------------------------------------------------------
# Defaults and precedence
# ---------------------------------------------------------------------------


def test_defaults_without_any_config(tmp_path):
    settings = load()
    assert isinstance(settings, Settings)
    assert settings.config_path is None
    assert settings["bind"] == "127.0.0.1"
    assert settings["port"] == 8888
    assert settings["threads"] == 10
    assert settings["fsync"] is True
    assert settings["paginate_by"] == 0
    assert settings["batch_max_requests"] == 25
    assert settings["userid_hmac_secret"] is None
    assert settings["bucket_create_principals"] == ["system.Authenticated"]
    assert settings["plugins"] == []
    assert settings["auth_policies"] == ["basicauth"]
    assert settings["data_dir"] == str(tmp_path / "data")
    assert set(settings) == set(DEFAULTS)


def test_attribute_access_reads_keys():
    settings = load()
    assert settings.port == 8888
    with pytest.raises(AttributeError):
        _ = settings.no_such_setting


def test_loaded_lists_are_copies_of_defaults():
    settings = load()
    settings["bucket_create_principals"].append("system.Everyone")
    assert DEFAULTS["bucket_create_principals"] == ["system.Authenticated"]
    assert load()["bucket_create_principals"] == ["system.Authenticated"]


def test_file_overrides_defaults(tmp_path):
    path = write_config(tmp_path, 'port = 9000\nplugins = ["flush"]\nfsync = false\n')
    settings = load(path)
    assert settings["port"] == 9000
    assert settings["plugins"] == ["flush"]
    assert settings["fsync"] is False
    assert settings["bind"] == "127.0.0.1"
    assert settings.config_path == str(path)


def test_environment_overrides_file(tmp_path):
    path = write_config(tmp_path, "port = 9000\nthreads = 4\n")
    settings = load(path, environ={"KINTOFS_PORT": "9100", "OTHER_PORT": "1"})
    assert settings["port"] == 9100
    assert settings["threads"] == 4


def test_overrides_win_over_environment_and_file(tmp_path):
    path = write_config(tmp_path, 'port = 9000\nbind = "0.0.0.0"\n')
    settings = load(
        path,
        overrides={"port": 9200, "bind": None, "data_dir": tmp_path / "elsewhere"},
        environ={"KINTOFS_PORT": "9100", "KINTOFS_DATA_DIR": "/from/env"},
    )
    assert settings["port"] == 9200
    # An override of None is an unset flag: the file's value stays.
    assert settings["bind"] == "0.0.0.0"
    assert settings["data_dir"] == str(tmp_path / "elsewhere")


def test_string_overrides_are_parsed_like_environment():
    settings = load(overrides={"port": "9300", "fsync": "no"})
    assert settings["port"] == 9300
    assert settings["fsync"] is False


def test_default_config_file_is_read_from_current_directory(tmp_path):
    write_config(tmp_path, "paginate_by = 50\n")
    settings = load()
    assert settings["paginate_by"] == 50
    assert settings.config_path == str(tmp_path / "kintofs.toml")


def test_explicit_missing_config_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "missing.toml")


def test_relative_data_dir_is_resolved_from_working_directory(tmp_path):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    path = write_config(conf_dir, 'data_dir = "store"\n')
    settings = load(path)
    assert os.path.isabs(settings["data_dir"])
    assert settings["data_dir"] == str(tmp_path / "store")


def test_environ_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("KINTOFS_THREADS", "3")
    assert load_settings()["threads"] == 3


# ---------------------------------------------------------------------------
# Environment coercion
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("true", True),
        ("1", True),
        ("yes", True),
        ("ON", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("Off", False),
    ],
)
def test_env_booleans(text, expected):
    assert load(environ={"KINTOFS_READONLY": text})["readonly"] is expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('["account", "basicauth"]', ["account", "basicauth"]),
        ("account basicauth", ["account", "basicauth"]),
        ("account,basicauth", ["account", "basicauth"]),
        (" account ,\n basicauth ", ["account", "basicauth"]),
        ("", []),
    ],
)
def test_env_lists(text, expected):
    assert load(environ={"KINTOFS_AUTH_POLICIES": text})["auth_policies"] == expected


def test_env_principals_keep_colons():
    settings = load(environ={"KINTOFS_ACCOUNT_WRITE_PRINCIPALS": "account:admin basicauth:abc"})
    assert settings["account_write_principals"] == ["account:admin", "basicauth:abc"]


def test_env_integer():
    settings = load(environ={"KINTOFS_MAX_REQUEST_BODY_BYTES": " 1024 "})
    assert settings["max_request_body_bytes"] == 1024


@pytest.mark.parametrize(
    "name, text",
    [
        ("KINTOFS_PORT", "eighty"),
        ("KINTOFS_PORT", "80.5"),
        ("KINTOFS_FSYNC", "maybe"),
        ("KINTOFS_PLUGINS", '["flush"'),
        ("KINTOFS_PLUGINS", "[1, 2]"),
    ],
)
def test_env_bad_values_name_variable(name, text):
    with pytest.raises(ConfigError) as info:
        load(environ={name: text})
    message = str(info.value)
    assert name in message
    assert "\n" not in message


def test_unknown_env_variable_is_an_error():
    with pytest.raises(ConfigError, match="KINTOFS_PROT") as info:
        load(environ={"KINTOFS_PROT": "9000"})
    assert info.value.key == "prot"


# ---------------------------------------------------------------------------
# userid_hmac_secret: unset vs explicitly empty
# ---------------------------------------------------------------------------


def test_secret_unset_is_none():
    assert load()["userid_hmac_secret"] is None


def test_secret_explicitly_empty_in_file(tmp_path):
    path = write_config(tmp_path, 'userid_hmac_secret = ""\n')
    assert load(path)["userid_hmac_secret"] == ""


def test_secret_explicitly_empty_in_environment():
    assert load(environ={"KINTOFS_USERID_HMAC_SECRET": ""})["userid_hmac_secret"] == ""


def test_secret_from_file_and_environment(tmp_path):
    path = write_config(tmp_path, 'userid_hmac_secret = "from-file"\n')
    assert load(path)["userid_hmac_secret"] == "from-file"
    settings = load(path, environ={"KINTOFS_USERID_HMAC_SECRET": "from-env"})
    assert settings["userid_hmac_secret"] == "from-env"


def test_secret_must_be_a_string(tmp_path):
    path = write_config(tmp_path, "userid_hmac_secret = 1234\n")
    with pytest.raises(ConfigError, match="userid_hmac_secret"):
        load(path)


# ---------------------------------------------------------------------------
# Generic <type>_<perm>_principals settings
# ---------------------------------------------------------------------------


def test_generic_principals_from_file(tmp_path):
    path = write_config(
        tmp_path,
        'collection_read_principals = ["system.Everyone"]\n'
        'record_create_principals = ["system.Authenticated", "account:bob"]\n',
    )
    settings = load(path)
    assert settings["collection_read_principals"] == ["system.Everyone"]
    assert settings["record_create_principals"] == ["system.Authenticated", "account:bob"]


def test_generic_principals_from_environment():
    settings = load(environ={"KINTOFS_GROUP_WRITE_PRINCIPALS": "account:admin"})
    assert settings["group_write_principals"] == ["account:admin"]


def test_generic_principals_absent_when_unset():
    settings = load()
    assert "collection_read_principals" not in settings
    assert settings["account_read_principals"] == []


@pytest.mark.parametrize(
    "key", ["collection_delete_principals", "schema_read_principals", "bucket_read_principal"]
)
def test_lookalike_principals_keys_are_unknown(tmp_path, key):
    path = write_config(tmp_path, f'{key} = ["system.Everyone"]\n')
    with pytest.raises(ConfigError, match=key):
        load(path)


def test_principals_must_be_an_array(tmp_path):
    path = write_config(tmp_path, 'bucket_create_principals = "system.Everyone"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "bucket_create_principals" in message
    assert "array" in message


# ---------------------------------------------------------------------------
# Bad files and bad values
# ---------------------------------------------------------------------------


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = write_config(tmp_path, "port = 9000\npaginateby = 10\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert "paginateby" in str(info.value)
    assert str(path) in str(info.value)
    assert info.value.key == "paginateby"


def test_sections_are_refused(tmp_path):
    path = write_config(tmp_path, "[server]\nport = 9000\n")
    with pytest.raises(ConfigError, match="server"):
        load(path)


def test_invalid_toml_names_file(tmp_path):
    path = write_config(tmp_path, "port = = 1\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "line",
    [
        'port = "8888"',
        "port = 8888.0",
        "fsync = 1",
        "threads = true",
        "bind = 127",
        "plugins = [1]",
        'plugins = "flush"',
    ],
)
def test_wrong_types_in_file(tmp_path, line):
    key = line.split(" ")[0]
    path = write_config(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == key
    assert key in str(info.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("port", 0),
        ("port", 65536),
        ("threads", 0),
        ("paginate_by", -1),
        ("batch_max_requests", 0),
        ("storage_max_fetch_size", 0),
        ("max_request_body_bytes", 0),
        ("max_json_depth", 0),
        ("plugins", ["flush", "signer"]),
        ("auth_policies", ["openid"]),
        ("log_level", "verbose"),
        ("http_scheme", "ftp"),
        ("bind", ""),
        ("data_dir", ""),
        ("bucket_create_principals", [""]),
    ],
)
def test_bad_values_are_refused(key, value):
    with pytest.raises(ConfigError) as info:
        load(overrides={key: value})
    assert info.value.key == key
    assert key in str(info.value)


def test_bad_value_in_file_names_file(tmp_path):
    path = write_config(tmp_path, "port = 70000\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    assert "65535" in str(info.value)


def test_bad_value_in_env_names_variable():
    with pytest.raises(ConfigError, match="KINTOFS_THREADS"):
        load(environ={"KINTOFS_THREADS": "0"})


def test_boundary_values_are_accepted():
    settings = load(overrides={"port": 65535, "threads": 1, "paginate_by": 0})
    assert (settings["port"], settings["threads"], settings["paginate_by"]) == (65535, 1, 0)
    assert load(overrides={"port": 1})["port"] == 1


def test_known_plugins_and_policies_are_accepted():
    settings = load(
        overrides={
            "plugins": ["flush", "default_bucket", "accounts", "history", "attachment"],
            "auth_policies": ["account", "basicauth"],
        }
    )
    assert settings["plugins"] == ["flush", "default_bucket", "accounts", "history", "attachment"]
    assert settings["auth_policies"] == ["account", "basicauth"]


def test_log_level_is_normalised():
    assert load(environ={"KINTOFS_LOG_LEVEL": "DEBUG"})["log_level"] == "debug"


def test_unknown_override_is_an_error():
    with pytest.raises(ConfigError, match="data_directory"):
        load(overrides={"data_directory": "/tmp/x"})


# ---------------------------------------------------------------------------
# The sample config and the documentation
# ---------------------------------------------------------------------------


def _expected_defaults(cwd):
    expected = dict(DEFAULTS)
    expected["data_dir"] = str(cwd / "data")
    return expected


def test_sample_config_loads_to_the_defaults(in_empty_dir):
    settings = load(SAMPLE)
    assert dict(settings) == _expected_defaults(in_empty_dir)


def _sample_keys(active_only=False):
    pattern = r"^\s*([a-z][a-z0-9_]*)\s*=" if active_only else r"^\s*#?\s*([a-z][a-z0-9_]*)\s*="
    return set(re.findall(pattern, SAMPLE.read_text(encoding="utf-8"), re.MULTILINE))


def _doc_headings():
    return re.findall(r"^### (\S+)\s*$", DOCS.read_text(encoding="utf-8"), re.MULTILINE)


def test_every_setting_is_in_the_sample_config():
    missing = sorted(set(DEFAULTS) - _sample_keys())
    assert not missing, f"settings missing from kintofs.toml: {missing}"


def test_every_setting_is_documented():
    missing = sorted(set(DEFAULTS) - set(_doc_headings()))
    assert not missing, f"settings without a '### key' section in docs/configuration.md: {missing}"


def test_docs_and_sample_mention_no_stale_settings():
    stale_docs = sorted(set(_doc_headings()) - set(DEFAULTS))
    assert not stale_docs, f"docs/configuration.md documents unknown settings: {stale_docs}"
    headings = _doc_headings()
    assert len(headings) == len(set(headings)), "a setting is documented twice"


def _comment_block_before(lines, index):
    """The comment lines above line `index`, skipping sibling `key =` lines."""
    while index > 0 and re.match(r"^[a-z][a-z0-9_]*\s*=", lines[index - 1]):
        index -= 1
    block = []
    while index > 0 and lines[index - 1].startswith("#"):
        index -= 1
        block.insert(0, lines[index])
    return " ".join(block)


def test_every_sample_setting_is_commented_with_its_kinto_name():
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    keys = 0
    for index, line in enumerate(lines):
        match = re.match(r"^#? ?([a-z][a-z0-9_]*) = ", line)
        if not match or match.group(1) not in DEFAULTS:
            continue
        keys += 1
        comment = _comment_block_before(lines, index)
        assert comment, f"{match.group(1)} has no comment in kintofs.toml"
        assert re.search(r"Kinto|kinto\.|multiauth\.|kintofs only", comment), (
            f"the comment of {match.group(1)} in kintofs.toml gives no Kinto name"
        )
    assert keys == len(DEFAULTS)


def test_only_the_secret_is_commented_out_in_the_sample():
    text = SAMPLE.read_text(encoding="utf-8")
    assert re.search(r"^# userid_hmac_secret = ", text, re.MULTILINE)
    assert _sample_keys(active_only=True) == set(DEFAULTS) - {"userid_hmac_secret"}
