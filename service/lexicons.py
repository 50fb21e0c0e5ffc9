"""The lexicon store: each API key's pronunciation lexicons in Redis, with recent versions kept.

A lexicon is one JSON string (``Keys.lexicon``: id, owner, name, lang, version, history, times,
entries) listed in the owner's sorted set (``Keys.owner_lexicons``). Every version it has had is
also kept in ``Keys.lexicon_versions`` (the last ``LEXICON_VERSIONS_KEPT``), because a job or book
records the version it was submitted with and its worker renders with exactly that one, even if
the lexicon changed in between. Lexicons have no retention TTL: they are settings, not results.
Another owner's lexicon answers as not found.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib

from config import defaults
from engine.exceptions import AssetError
from engine.kokoro import load_vocab
from engine.lexicon import Lexicon
from service.exceptions import ConflictError, LexiconNotFoundError
from service.keys import Keys, check_owner, is_id, new_id


@dataclass
class LexiconRecord:
    """A stored lexicon: who owns it, when it changed, its versions, and the current entries."""

    id: str
    owner: str
    lexicon: Lexicon
    created_at: float
    updated_at: float
    history: list[str] = field(default_factory=list)  # versions, oldest first (the last is current)

    @property
    def version(self) -> str:
        """The current version (digest of the entries)."""
        return self.lexicon.version

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(
            {
                "id": self.id,
                "owner": self.owner,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "history": self.history,
                **self.lexicon.to_dict(),
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> LexiconRecord:
        """Read the stored form back."""
        data = json.loads(raw)
        return cls(
            id=data["id"],
            owner=data["owner"],
            lexicon=Lexicon.from_dict(data),
            created_at=float(data["created_at"]),
            updated_at=float(data["updated_at"]),
            history=list(data.get("history", [])),
        )


class VocabCache:
    """Kokoro's phoneme vocabulary from the assets directory, read once; None when it is missing."""

    def __init__(self, assets_dir: Path) -> None:
        self.path = Path(assets_dir).expanduser() / "vocab.json"
        self._vocab: frozenset[str] | None = None
        self._lock = threading.Lock()

    def get(self) -> frozenset[str] | None:
        """The vocabulary's symbols (None if the assets are not fetched: IPA is then checked by the worker)."""
        if self._vocab is None:
            with self._lock:
                if self._vocab is None and self.path.is_file():
                    try:
                        self._vocab = frozenset(load_vocab(self.path))
                    except AssetError:
                        return None
        return self._vocab


class LexiconStore:
    """Create, read, list, replace and delete an owner's lexicons; read any kept version."""

    def __init__(
        self,
        redis: redis_lib.Redis,
        keys: Keys,
        vocab: VocabCache,
        *,
        per_owner: int = defaults.LEXICONS_PER_OWNER,
        versions_kept: int = defaults.LEXICON_VERSIONS_KEPT,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.vocab = vocab
        self.per_owner = per_owner
        self.versions_kept = versions_kept
        self._snapshots: dict[tuple[str, str], Lexicon] = {}
        self._lock = threading.Lock()

    def _validated(self, lexicon: Lexicon) -> Lexicon:
        vocab = self.vocab.get()
        return lexicon.validate(vocab) if vocab is not None else lexicon

    def create(self, owner: str, lexicon: Lexicon) -> LexiconRecord:
        """Store a new lexicon (IPA checked); a full owner gets a 409 naming the limit."""
        owner = check_owner(owner)
        lexicon = self._validated(lexicon)
        if self.redis.zcard(self.keys.owner_lexicons(owner)) >= self.per_owner:
            raise ConflictError(
                f"This API key already has {self.per_owner} lexicons; delete one (DELETE /v1/lexicons/<id>) "
                "or add entries to an existing one.",
                limit=self.per_owner,
            )
        now = time.time()
        record = LexiconRecord(new_id(), owner, lexicon, now, now, [lexicon.version])
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.lexicon(record.id), record.to_json())
        pipe.hset(self.keys.lexicon_versions(record.id), lexicon.version, _snapshot(lexicon))
        pipe.zadd(self.keys.owner_lexicons(owner), {record.id: now})
        pipe.execute()
        return record

    def get(self, owner: str, lexicon_id: object) -> LexiconRecord:
        """The caller's lexicon; another owner's, a missing or a malformed id is not found."""
        if not is_id(lexicon_id):
            raise LexiconNotFoundError(
                f"No lexicon {lexicon_id!r}: lexicon ids are 32 hex digits (GET /v1/lexicons lists yours).",
                lexicon=str(lexicon_id)[:64],
            )
        raw = self.redis.get(self.keys.lexicon(lexicon_id))  # type: ignore[arg-type]
        record = LexiconRecord.from_json(raw) if raw else None
        if record is None or record.owner != owner:
            raise LexiconNotFoundError(
                f"No lexicon {lexicon_id} for this API key; GET /v1/lexicons lists yours.", lexicon=lexicon_id
            )
        return record

    def list(self, owner: str) -> list[LexiconRecord]:
        """The owner's lexicons, newest first."""
        ids = [i.decode() if isinstance(i, bytes) else i for i in self.redis.zrevrange(self.keys.owner_lexicons(owner), 0, -1)]
        raws = self.redis.mget([self.keys.lexicon(i) for i in ids]) if ids else []
        return [r for r in (LexiconRecord.from_json(raw) for raw in raws if raw) if r.owner == owner]

    def replace(self, owner: str, lexicon_id: str, lexicon: Lexicon) -> LexiconRecord:
        """Put new entries (and name, lang) in place; the new version is kept beside the older ones."""
        record = self.get(owner, lexicon_id)
        lexicon = self._validated(lexicon)
        record.lexicon = lexicon
        record.updated_at = time.time()
        history = [v for v in record.history if v != lexicon.version] + [lexicon.version]
        dropped, record.history = history[: -self.versions_kept], history[-self.versions_kept :]
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.lexicon(record.id), record.to_json())
        pipe.hset(self.keys.lexicon_versions(record.id), lexicon.version, _snapshot(lexicon))
        if dropped:
            pipe.hdel(self.keys.lexicon_versions(record.id), *dropped)
        pipe.execute()
        return record

    def delete(self, owner: str, lexicon_id: str) -> None:
        """Remove a lexicon and its kept versions (jobs already queued with it then fail clearly)."""
        record = self.get(owner, lexicon_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.lexicon(record.id), self.keys.lexicon_versions(record.id))
        pipe.zrem(self.keys.owner_lexicons(owner), record.id)
        pipe.execute()

    def snapshot(self, owner: str, lexicon_id: str, version: str) -> Lexicon:
        """The lexicon as it was at ``version`` (for a worker); cached, since versions never change."""
        key = (lexicon_id, version)
        with self._lock:
            cached = self._snapshots.get(key)
        if cached is not None:
            return cached
        record = self.get(owner, lexicon_id)
        raw = self.redis.hget(self.keys.lexicon_versions(record.id), version)
        if raw is None:
            raise LexiconNotFoundError(
                f"Lexicon {lexicon_id} no longer keeps version {version} (it changed more than "
                f"{self.versions_kept} times or was deleted since this was submitted); submit it again.",
                lexicon=lexicon_id,
                version=version,
            )
        lexicon = Lexicon.from_dict(json.loads(raw))
        with self._lock:
            if len(self._snapshots) > 64:
                self._snapshots.clear()
            self._snapshots[key] = lexicon
        return lexicon


def _snapshot(lexicon: Lexicon) -> str:
    """The JSON kept for one version."""
    return json.dumps(lexicon.to_dict(), ensure_ascii=False)


def summary(record: LexiconRecord, *, entries: bool = True) -> dict[str, Any]:
    """The public JSON form of a stored lexicon."""
    body: dict[str, Any] = {
        "id": record.id,
        "object": "lexicon",
        "name": record.lexicon.name,
        "lang": record.lexicon.lang,
        "version": record.version,
        "versions": list(reversed(record.history)),
        "entry_count": len(record.lexicon.entries),
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }
    if entries:
        body["entries"] = [e.to_dict() for e in record.lexicon.entries]
    return body
