"""State in SQLite: every resource is a JSON document keyed by (kind, name), and counters.

One table keeps the service simple and restart-safe: a restart reads the same documents back.
Creating is insert-only (``create``: a name taken is ``AlreadyExists``, never overwritten);
``put`` replaces a document that exists. Counters (``next_number``) hand out numbers that are
never given twice, whatever is deleted meanwhile (a model package group's versions).
"""
import json
import sqlite3
import threading
import time
from typing import Callable, List, Optional


class AlreadyExists(Exception):
    """``create`` found the name taken: nothing was written."""


class Store:
    def __init__(self, path: str):
        # one lock for the whole store: a caller's read-check-write holds it (``with
        # store.lock``) so that no other thread writes in between
        self.lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS resources (kind TEXT, name TEXT, created REAL, "
            "body TEXT, PRIMARY KEY (kind, name))")
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, "
                         "value INTEGER)")

    def write(self, kind: str, name: str, body: dict, create: bool = False) -> dict:
        """The one place documents are written. ``create``: insert only (AlreadyExists when
        the name is taken); otherwise insert or replace, keeping the first creation time
        (list order)."""
        text = json.dumps(body, default=str)
        with self.lock:
            if create:
                try:
                    self._db.execute("INSERT INTO resources VALUES (?, ?, ?, ?)",
                                     (kind, name, time.time(), text))
                except sqlite3.IntegrityError:
                    raise AlreadyExists(f"{kind} {name}") from None
            else:
                self._db.execute(
                    "INSERT INTO resources VALUES (?, ?, ?, ?) ON CONFLICT (kind, name) "
                    "DO UPDATE SET body = excluded.body", (kind, name, time.time(), text))
        return body

    def create(self, kind: str, name: str, body: dict) -> dict:
        """A new document; AlreadyExists (and nothing written) when the name is taken."""
        return self.write(kind, name, body, create=True)

    def put(self, kind: str, name: str, body: dict) -> dict:
        """Create or replace a document."""
        return self.write(kind, name, body)

    def get(self, kind: str, name: str) -> Optional[dict]:
        with self.lock:
            row = self._db.execute("SELECT body FROM resources WHERE kind=? AND name=?",
                                   (kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def update(self, kind: str, name: str, **changes) -> dict:
        """Change some fields; a field set to None is removed (AWS omits unset fields)."""
        with self.lock:
            body = self.get(kind, name)
            if body is None:
                raise KeyError(f"{kind} {name}")
            body.update(changes)
            for key in [k for k, v in changes.items() if v is None]:
                del body[key]
            return self.put(kind, name, body)

    def delete(self, kind: str, name: str) -> bool:
        with self.lock:
            cur = self._db.execute("DELETE FROM resources WHERE kind=? AND name=?", (kind, name))
        return cur.rowcount > 0

    def list(self, kind: str, prefix: str = "") -> List[dict]:
        """Documents of one kind (whose names start with ``prefix``), oldest first."""
        with self.lock:
            rows = self._db.execute(
                "SELECT body FROM resources WHERE kind=? AND substr(name, 1, ?)=? "
                "ORDER BY created, rowid", (kind, len(prefix), prefix)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def next_number(self, counter: str, first: Callable[[], int] = lambda: 0) -> int:
        """The counter's next number (1 after ``first()``, the highest number given before the
        counter was kept, for a home written by an older version), never given twice."""
        with self.lock:
            row = self._db.execute("SELECT value FROM counters WHERE name=?",
                                   (counter,)).fetchone()
            number = (row[0] if row else first()) + 1
            self._db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) "
                             "DO UPDATE SET value = excluded.value", (counter, number))
        return number
