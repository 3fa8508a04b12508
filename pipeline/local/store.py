"""State in SQLite: every resource is a JSON document keyed by (kind, name).

One table keeps the service simple and restart-safe: a restart reads the same documents back.
"""
import json
import sqlite3
import threading
import time
from typing import List, Optional


class Store:
    def __init__(self, path: str):
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS resources (kind TEXT, name TEXT, created REAL, "
            "body TEXT, PRIMARY KEY (kind, name))")

    def put(self, kind: str, name: str, body: dict) -> dict:
        """Create or replace a document; it keeps its first creation time (list order)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO resources VALUES (?, ?, ?, ?) ON CONFLICT (kind, name) "
                "DO UPDATE SET body = excluded.body",
                (kind, name, time.time(), json.dumps(body, default=str)))
        return body

    def get(self, kind: str, name: str) -> Optional[dict]:
        with self._lock:
            row = self._db.execute("SELECT body FROM resources WHERE kind=? AND name=?",
                                   (kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def update(self, kind: str, name: str, **changes) -> dict:
        """Change some fields; a field set to None is removed (AWS omits unset fields)."""
        with self._lock:
            body = self.get(kind, name)
            if body is None:
                raise KeyError(f"{kind} {name}")
            body.update(changes)
            for key in [k for k, v in changes.items() if v is None]:
                del body[key]
            return self.put(kind, name, body)

    def delete(self, kind: str, name: str) -> bool:
        with self._lock:
            cur = self._db.execute("DELETE FROM resources WHERE kind=? AND name=?", (kind, name))
        return cur.rowcount > 0

    def list(self, kind: str, prefix: str = "") -> List[dict]:
        """Documents of one kind (whose names start with ``prefix``), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM resources WHERE kind=? AND substr(name, 1, ?)=? "
                "ORDER BY created, rowid", (kind, len(prefix), prefix)).fetchall()
        return [json.loads(r[0]) for r in rows]
