"""Plugins, enabled by name in the ``plugins`` setting.

A plugin is a module with ``setup(service)``; it hooks in through the
public interface of the :class:`~kintofs.web.app.Service` it is given
(``add_route``, ``add_capability``, ``feed.subscribe``...), described in
docs/plugins.md.
"""

import importlib

AVAILABLE = (
    "flush",
    "history",
    "accounts",
    "default_bucket",
    "attachment",
    "changes",
    "admin",
    "openid",
)


def setup_plugins(service, names):
    for name in names:
        if name not in AVAILABLE:
            raise ValueError(
                f"plugin {name!r} is not available in this version of kintofs "
                f"(available: {', '.join(AVAILABLE)})"
            )
    # default_bucket first, whatever the order of the setting: bottle tries
    # routes in the order they were added, and /buckets/default/... must reach
    # its routes before another plugin's (/buckets/<bid>/history).
    for name in sorted(
        set(names), key=lambda name: (name != "default_bucket", AVAILABLE.index(name))
    ):
        importlib.import_module(f"{__name__}.{name}").setup(service)
