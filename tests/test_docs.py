"""The documentation keeps up with the code.

* Every setting the code reads (``settings["key"]``, ``settings.get("key")``,
  ``settings.key``) is in the sample kintofs.toml and has a ``### key``
  section in docs/configuration.md. (tests/test_config.py checks the same
  for every key of DEFAULTS; this catches a key read without a default.)
* Every ``kintofs <command>`` the README shows exists.
"""

import re
import subprocess
import sys
from pathlib import Path

from kintofs.config import GENERIC_PRINCIPALS_RE

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "kintofs.toml"
CONFIG_DOC = REPO / "docs" / "configuration.md"
README = REPO / "README.md"

# `settings` as a whole name (also `self.settings`, `state.settings`), not
# `from_settings` nor a URL's `/settings.html`.
SETTINGS = r"(?<![A-Za-z0-9_/])settings"
READ_BY_KEY = re.compile(SETTINGS + r"""(?:\[|\.get\()\s*["']([a-z][a-z0-9_]*)["']""")
READ_BY_ATTRIBUTE = re.compile(SETTINGS + r"\.([a-z][a-z0-9_]*)\b(?!\()")
NOT_SETTINGS = {"config_path"}  # attributes of Settings that are not settings


def keys_read_by_the_code():
    found = {}
    for path in sorted((REPO / "kintofs").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern in (READ_BY_KEY, READ_BY_ATTRIBUTE):
            for key in pattern.findall(text):
                if key not in NOT_SETTINGS:
                    found.setdefault(key, str(path.relative_to(REPO)))
    return found


def test_the_scan_finds_settings():
    # A pattern that stopped matching would make the next test pass vacuously.
    found = keys_read_by_the_code()
    assert {"bind", "port", "data_dir", "threads", "plugins", "readonly"} <= set(found)


def test_every_setting_read_by_the_code_is_in_the_sample_and_the_docs():
    sample = SAMPLE.read_text(encoding="utf-8")
    sample_keys = set(re.findall(r"^#? ?([a-z][a-z0-9_]*) =", sample, re.MULTILINE))
    docs = CONFIG_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"^### (\S+)\s*$", docs, re.MULTILINE))
    missing = []
    for key, where in sorted(keys_read_by_the_code().items()):
        if GENERIC_PRINCIPALS_RE.match(key):
            # The <type>_<perm>_principals family is documented as a family.
            in_sample, in_docs = key in sample_keys or "_principals" in sample, key in docs
        else:
            in_sample, in_docs = key in sample_keys, key in documented
        if not in_sample:
            missing.append(f"{key} (read in {where}) is not in kintofs.toml")
        if not in_docs:
            missing.append(f"{key} (read in {where}) has no '### {key}' in docs/configuration.md")
    assert not missing, "\n".join(missing)


def test_every_command_in_the_readme_exists():
    help_text = subprocess.run(
        [sys.executable, "-m", "kintofs", "--help"], capture_output=True, text=True, check=True
    ).stdout
    commands = set(re.search(r"\{([a-z,]+)\}", help_text).group(1).split(","))
    readme = README.read_text(encoding="utf-8")
    code = "\n".join(
        re.findall(r"```.*?\n(.*?)```", readme, re.DOTALL) + re.findall(r"`([^`\n]+)`", readme)
    )
    code = re.sub(r"(?:^|\s)#.*", "", code, flags=re.MULTILINE)  # shell comments are prose
    # `kintofs serve`, `kintofs.pyz init`, `sudo -u kintofs kintofs account`,
    # `docker exec kintofs kintofs account` (the user and the container are no commands).
    command = r"(?<!-u )(?<![\w-])kintofs(?:\.pyz)? (?!kintofs\b)([a-z]+)\b"
    shown = set(re.findall(command, code))
    assert shown, "the README shows no kintofs command"
    assert shown <= commands, f"README shows commands that do not exist: {shown - commands}"


# -- the plugin interface (docs/plugins.md) ----------------------------------

PLUGINS_DOC = REPO / "docs" / "plugins.md"
PLUGINS = REPO / "kintofs" / "plugins"
# Web-layer methods of Service that are not for plugins.
NOT_FOR_PLUGINS = {"policies", "groups_of"}
# Storage internals a plugin still uses, until the store offers them (docs/plugins.md).
# Remove an entry once its plugin no longer needs it; none is left.
PENDING_STORAGE_IMPORTS: dict[str, set[str]] = {}


def public_methods(cls):
    return {
        name for name, value in vars(cls).items() if not name.startswith("_") and callable(value)
    }


def test_every_hook_a_plugin_may_use_is_documented():
    from kintofs.feed import Change
    from kintofs.web.app import Service
    from kintofs.web.authorizer import Authorizer
    from kintofs.web.kindhooks import KindHooks
    from kintofs.web.resource import ResourceView

    doc = PLUGINS_DOC.read_text(encoding="utf-8")
    names = (
        (public_methods(Service) - NOT_FOR_PLUGINS)
        | public_methods(KindHooks)
        | public_methods(ResourceView)
        | public_methods(Authorizer)
        | set(Change.__dataclass_fields__)
    )
    assert {"add_route", "add_validator", "before_create", "write", "userid"} <= names
    missing = sorted(name for name in names if f"`{name}`" not in doc and f"`{name}(" not in doc)
    assert not missing, f"docs/plugins.md does not describe: {missing}"


def test_plugins_touch_no_private_names_nor_storage_files():
    import ast

    problems = []
    for path in sorted(PLUGINS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                problems.append(f"{path.name}:{node.lineno} uses .{node.attr}")
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                if module.startswith(
                    ("..fsstore.", "kintofs.fsstore.")
                ) and module not in PENDING_STORAGE_IMPORTS.get(path.name, ()):
                    problems.append(f"{path.name}:{node.lineno} imports {module}")
    assert not problems, "\n".join(problems)
