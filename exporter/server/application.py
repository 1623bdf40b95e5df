"""`serve`'s gunicorn application: settings parsed once, in the master; the app built from them
in each worker, after the fork.

The workers are forked from the master, so they inherit this object and the settings in it:
command-line flags reach them without passing through the environment.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from exporter.server import gunicorn_conf
from exporter.settings import Settings


class ServiceApplication(BaseApplication):  # type: ignore[misc]
    """Gunicorn running the service with `gunicorn_conf`, on `bind`, with `workers` workers."""

    def __init__(self, settings: Settings, *, bind: str, workers: int) -> None:
        self.settings = settings
        self._bind = bind
        self._workers = workers
        super().__init__()

    def load_config(self) -> None:
        # What `gunicorn -c python:exporter.server.gunicorn_conf` does with the module.
        for name, value in vars(gunicorn_conf).items():
            if name in self.cfg.settings:
                self.cfg.set(name, value)
        self.cfg.set("bind", [self._bind])
        self.cfg.set("workers", self._workers)

    def load(self) -> Any:
        from exporter.server.wsgi import build_app

        return build_app(self.settings)
