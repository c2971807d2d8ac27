"""Finished stages on disk, so that running the same command again skips them.

A stage is done when ``<output>/stages/<name>.json`` exists and holds the same *key*: a digest of
everything that decides the stage's result (the data's fingerprint, the settings, the plan, the
stages it reads). Another key means other data or settings: the stage runs again and replaces the
record. A record is written after the stage's outputs, in one atomic rename, so an interrupted stage
(Ctrl-C, a killed job) leaves no record and is the only work lost.

Under DDP every process walks the same stages: each reads the records, only process 0 writes them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def stage_key(*parts: Any) -> str:
    """A short digest of JSON-able ``parts``: equal parts, equal key."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` through a temporary file and one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(temporary, path)


class StageStore:
    """Records of finished stages under ``directory``; ``writer`` is False on processes other than 0."""

    def __init__(self, directory: Path, writer: bool = True):
        self.directory = Path(directory)
        self.writer = writer
        self.finished: list[str] = []  # the stages found done or recorded through this store, in order

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def get(self, name: str, key: str) -> dict[str, Any] | None:
        """The result of stage ``name`` if it finished with this ``key``, else None."""
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # a record cut short (a full disk): run the stage again
        if record.get("key") != key:
            return None
        if name not in self.finished:
            self.finished.append(name)
        return record.get("result")

    def put(self, name: str, key: str, result: dict[str, Any]) -> dict[str, Any]:
        """Record that stage ``name`` finished with ``result``; returns ``result``."""
        if self.writer:
            write_json_atomic(self._path(name), {"key": key, "result": result})
        if name not in self.finished:
            self.finished.append(name)
        return result
