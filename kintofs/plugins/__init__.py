"""Plugins, enabled by name in the ``plugins`` setting.

A plugin is a module with ``setup(service)``; it hooks in through the
:class:`~kintofs.web.app.Service` it is given: routes on ``service.app``,
entries in ``service.capabilities``, ``service.auth_policies``,
``service.change_listeners``, ``service.validators``,
``service.heartbeat_checks`` and ``service.hello_user_extensions``.
"""
import importlib

AVAILABLE = ("flush",)


def setup_plugins(service, names):
    for name in names:
        if name not in AVAILABLE:
            raise ValueError(f"plugin {name!r} is not available in this version of kintofs "
                             f"(available: {', '.join(AVAILABLE)})")
        importlib.import_module(f"{__name__}.{name}").setup(service)
