"""Runtime settings: one frozen dataclass read from ``SPOOL_*`` environment variables.

Nothing is read at import time: call :meth:`Settings.from_env` once per process
(the web app factory, the Celery app and the CLI each do) and pass the result on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config import defaults

#: Owner names (derived from API keys) are used inside Redis keys, so they are restricted.
OWNER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Queue names are used in Redis keys and on the worker command line.
QUEUE_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

#: Accepted range of ``first_segment_phonemes``: engine.segment's MIN_BUDGET_PHONEMES and
#: DEFAULT_MAX_PHONEMES (repeated here so reading settings never imports the engine; a test checks).
MIN_BUDGET = 24
MAX_BUDGET = 180

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A ``SPOOL_*`` variable has a value Spool cannot use; the message names it and the valid form."""


def _parse_bool(name: str, raw: str) -> bool:
    """Parse a boolean variable (1/0, true/false, yes/no, on/off)."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean: use 1 or 0 (true/false, yes/no, on/off).")


def _parse_number(name: str, raw: str, kind: type, minimum: float | None) -> Any:
    """Parse an int or float variable with an optional lower bound."""
    try:
        value = kind(raw.strip())
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {'an integer' if kind is int else 'a number'}.") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name}={raw!r} is too small: it must be at least {minimum}.")
    return value


def owner_for_key(key: str) -> str:
    """Name an unnamed API key by a short hash of it, so the key itself never lands in Redis or logs."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse ``SPOOL_API_KEYS``: ``key1,key2`` or ``key1:alice,key2:bob`` into {key: owner name}."""
    keys: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, name = item.partition(":")
        key, name = key.strip(), name.strip()
        if len(key) < 8:
            raise SettingsError("SPOOL_API_KEYS: every key must be at least 8 characters long.")
        if not sep:
            name = owner_for_key(key)
        if not OWNER_NAME_RE.match(name):
            raise SettingsError(
                f"SPOOL_API_KEYS: owner name {name!r} is not valid: use 1-64 letters, digits, '_', '.', '-'."
            )
        keys[key] = name
    return keys


@dataclass(frozen=True)
class Settings:
    """Every knob of a Spool process; see ``config.defaults`` for what each one means."""

    redis_url: str = defaults.REDIS_URL
    key_prefix: str = defaults.KEY_PREFIX
    broker_key_prefix: str = defaults.BROKER_KEY_PREFIX
    storage_url: str = defaults.STORAGE_URL
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str = defaults.S3_REGION
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_create_bucket: bool = False
    assets_dir: str = defaults.ASSETS_DIR
    engine_threads: int = defaults.ENGINE_THREADS
    first_segment_phonemes: int = defaults.FIRST_SEGMENT_PHONEMES
    providers: tuple[str, ...] = ()
    queue: str = defaults.QUEUE
    worker_queues: tuple[str, ...] = (defaults.QUEUE,)
    job_ttl: int = defaults.JOB_TTL
    max_text_chars: int = defaults.MAX_TEXT_CHARS
    max_body_bytes: int = defaults.MAX_BODY_BYTES
    max_upload_bytes: int = defaults.MAX_UPLOAD_BYTES
    task_soft_time_limit: int = defaults.TASK_SOFT_TIME_LIMIT
    task_time_limit: int = defaults.TASK_TIME_LIMIT
    visibility_timeout: int = defaults.VISIBILITY_TIMEOUT
    speech_timeout: float = defaults.SPEECH_TIMEOUT
    webhook_timeout: float = defaults.WEBHOOK_TIMEOUT
    stream_maxlen: int = defaults.STREAM_MAXLEN
    stream_ttl: int = defaults.STREAM_TTL
    presign_expires: int = defaults.PRESIGN_EXPIRES
    heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL
    heartbeat_ttl: int = defaults.HEARTBEAT_TTL
    max_attempts: int = defaults.MAX_ATTEMPTS
    reconcile_grace: float = defaults.RECONCILE_GRACE
    reconcile_interval: float = defaults.RECONCILE_INTERVAL
    redis_retry_window: float = defaults.REDIS_RETRY_WINDOW
    audio_redirect: bool = defaults.AUDIO_REDIRECT
    api_keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    log_level: str = defaults.LOG_LEVEL
    log_format: str = defaults.LOG_FORMAT
    host: str = defaults.HOST
    port: int = defaults.PORT
    url: str = defaults.URL
    api_key: str | None = field(default=None, repr=False)
    var_dir: str = defaults.VAR_DIR
    # Limits, quotas and retention (issue 14, item 5); see config.defaults for each.
    max_concurrent_jobs: int = defaults.MAX_CONCURRENT_JOBS
    max_chars_per_day: int = defaults.MAX_CHARS_PER_DAY
    max_books_in_flight: int = defaults.MAX_BOOKS_IN_FLIGHT
    allowed_lanes: tuple[str, ...] = defaults.ALLOWED_LANES
    key_quotas: str = defaults.KEY_QUOTAS
    quota_retry_after: int = defaults.QUOTA_RETRY_AFTER
    stream_max_bytes: int = defaults.STREAM_MAX_BYTES
    max_streams_per_key: int = defaults.MAX_STREAMS_PER_KEY
    max_streams_per_process: int = defaults.MAX_STREAMS_PER_PROCESS
    max_streams: int = defaults.MAX_STREAMS
    redis_maxmemory: str = defaults.REDIS_MAXMEMORY
    retention_days: float = defaults.RETENTION_DAYS
    checkpoint_retention_days: float = defaults.CHECKPOINT_RETENTION_DAYS
    sweep_interval: int = defaults.SWEEP_INTERVAL

    # -- exposure and webhooks (docs/security.md) -------------------------------------------------
    webhook_queue: str = defaults.WEBHOOK_QUEUE
    # -- book parsing off the web process (issue 14, item 2) --
    parse_queue: str = defaults.PARSE_QUEUE
    parse_memory_mb: int = defaults.PARSE_MEMORY_MB
    parse_cpu_seconds: int = defaults.PARSE_CPU_SECONDS
    plan_wait: float = defaults.PLAN_WAIT
    webhook_attempts: int = defaults.WEBHOOK_ATTEMPTS
    webhook_backoff: float = defaults.WEBHOOK_BACKOFF
    webhook_allow: tuple[str, ...] = defaults.WEBHOOK_ALLOW
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_ca_file: str = defaults.WEBHOOK_CA_FILE
    allow_anonymous: bool = defaults.ALLOW_ANONYMOUS
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    allowed_origins: tuple[str, ...] = defaults.ALLOWED_ORIGINS

    # -- fast first audio (issue 15 part 2) --
    fast_start_threads: int = defaults.FAST_START_THREADS
    fast_start_segments: int = defaults.FAST_START_SEGMENTS

    # -- storage outages and assembly (issue 13) --
    storage_retry_window: float = defaults.STORAGE_RETRY_WINDOW
    assembly_lock_ttl: int = defaults.ASSEMBLY_LOCK_TTL
    assembly_concurrent: bool = defaults.ASSEMBLY_CONCURRENT

    # -- automatic QA (issue 17 part 4) --
    qa_threshold: float = defaults.QA_THRESHOLD
    qa_threads: int = defaults.QA_THREADS

    def __post_init__(self) -> None:
        for queue in (self.queue, *self.worker_queues):
            if not QUEUE_NAME_RE.match(queue):
                raise SettingsError(
                    f"Queue name {queue!r} is not valid: use lower-case letters, digits, '_' or '-' "
                    f"(e.g. {', '.join(defaults.QUEUES)})."
                )
        if self.task_time_limit <= self.task_soft_time_limit:
            raise SettingsError(
                "SPOOL_TASK_TIME_LIMIT must be larger than SPOOL_TASK_SOFT_TIME_LIMIT "
                f"(got {self.task_time_limit} <= {self.task_soft_time_limit})."
            )
        if self.visibility_timeout <= self.task_time_limit:
            # A message redelivered while its task still runs would render the job twice.
            raise SettingsError(
                "SPOOL_VISIBILITY_TIMEOUT must be larger than SPOOL_TASK_TIME_LIMIT "
                f"(got {self.visibility_timeout} <= {self.task_time_limit})."
            )
        if self.heartbeat_ttl <= self.heartbeat_interval:
            raise SettingsError(
                "SPOOL_HEARTBEAT_TTL must be larger than SPOOL_HEARTBEAT_INTERVAL "
                f"(got {self.heartbeat_ttl} <= {self.heartbeat_interval})."
            )
        if self.max_attempts < 1:
            raise SettingsError(
                f"SPOOL_MAX_ATTEMPTS={self.max_attempts}: use 1 or more (default {defaults.MAX_ATTEMPTS})."
            )
        if not MIN_BUDGET <= self.first_segment_phonemes <= MAX_BUDGET:
            raise SettingsError(
                f"SPOOL_FIRST_SEGMENT_PHONEMES={self.first_segment_phonemes}: use a whole number "
                f"from {MIN_BUDGET} to {MAX_BUDGET} (default {defaults.FIRST_SEGMENT_PHONEMES})."
            )
        if self.assembly_lock_ttl < 1:
            raise SettingsError(
                f"SPOOL_ASSEMBLY_LOCK_TTL={self.assembly_lock_ttl}: use at least 1 second "
                f"(default {defaults.ASSEMBLY_LOCK_TTL}); the assembler renews it every third of it."
            )
        if not 0 < self.qa_threshold <= 1 or self.qa_threads < 1:
            raise SettingsError(
                f"SPOOL_QA_THRESHOLD={self.qa_threshold}, SPOOL_QA_THREADS={self.qa_threads}: use a word "
                f"error rate above 0 and at most 1 (default {defaults.QA_THRESHOLD}) and 1 or more threads."
            )
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"SPOOL_LOG_FORMAT={self.log_format!r}: use 'text' or 'json'.")
        check_limits(self)
        self._check_exposure()

    def _check_exposure(self) -> None:
        """Check the exposure and webhook settings (kept apart from the rest of the checks)."""
        if not QUEUE_NAME_RE.match(self.webhook_queue):
            raise SettingsError(
                f"SPOOL_WEBHOOK_QUEUE={self.webhook_queue!r}: use lower-case letters, digits, '_' or '-'."
            )
        if not QUEUE_NAME_RE.match(self.parse_queue):
            raise SettingsError(
                f"SPOOL_PARSE_QUEUE={self.parse_queue!r}: use lower-case letters, digits, '_' or '-'."
            )
        if self.parse_memory_mb < 64 or self.parse_cpu_seconds < 1:
            raise SettingsError(
                "SPOOL_PARSE_MEMORY_MB must be at least 64 and SPOOL_PARSE_CPU_SECONDS at least 1 "
                f"(defaults {defaults.PARSE_MEMORY_MB} and {defaults.PARSE_CPU_SECONDS})."
            )
        if self.webhook_attempts < 1:
            raise SettingsError("SPOOL_WEBHOOK_ATTEMPTS must be at least 1 (the first delivery).")
        unknown = [key for key in self.admin_keys if key not in self.api_keys]
        if unknown:
            raise SettingsError(
                "SPOOL_ADMIN_KEYS: every admin key must also be listed in SPOOL_API_KEYS "
                f"({len(unknown)} is not)."
            )

    @property
    def assets_path(self) -> Path:
        """The assets directory with ``~`` expanded."""
        return Path(self.assets_dir).expanduser()

    @property
    def auth_enabled(self) -> bool:
        """True when API keys are configured and every /v1 request must carry one."""
        return bool(self.api_keys)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Build settings from a dict of field names (unknown names are an error)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise SettingsError(
                f"Unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}."
            )
        values = dict(values)
        if isinstance(values.get("api_keys"), str):
            values["api_keys"] = parse_api_keys(values["api_keys"])
        for name in ("providers", "worker_queues", "webhook_allow", "admin_keys", "allowed_origins"):
            if isinstance(values.get(name), str):
                values[name] = tuple(p.strip() for p in values[name].split(",") if p.strip())
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``SPOOL_*`` variable of ``environ`` (default ``os.environ``) into settings."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = defaults.ENV_PREFIX + f.name.upper()
            if name not in env:
                continue
            raw = env[name]
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            if f.name == "api_keys":
                values[f.name] = parse_api_keys(raw)
            elif kind.startswith("tuple"):
                values[f.name] = tuple(p.strip() for p in raw.split(",") if p.strip())
            elif kind == "bool":
                values[f.name] = _parse_bool(name, raw)
            elif kind == "int":
                values[f.name] = _parse_number(name, raw, int, 0)
            elif kind == "float":
                values[f.name] = _parse_number(name, raw, float, 0)
            elif kind.startswith("str | None"):
                values[f.name] = raw.strip() or None
            else:
                values[f.name] = raw.strip()
        # The S3 credentials also come from boto3's usual variables when Spool's own are absent.
        for field_name, fallback in (
            ("s3_access_key", "AWS_ACCESS_KEY_ID"),
            ("s3_secret_key", "AWS_SECRET_ACCESS_KEY"),
        ):
            if field_name not in values and env.get(fallback):
                values[field_name] = env[fallback]
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """Render these settings as ``SPOOL_*`` variables (for starting workers with the same view)."""
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            name = defaults.ENV_PREFIX + f.name.upper()
            if f.name == "api_keys":
                env[name] = ",".join(f"{k}:{v}" for k, v in value.items())
            elif isinstance(value, tuple):
                env[name] = ",".join(value)
            elif isinstance(value, bool):
                env[name] = "1" if value else "0"
            else:
                env[name] = str(value)
        return env


# Limits, quotas and retention (issue 14, item 5) ---------------------------------------------------
#: Fields a per-owner entry of ``SPOOL_KEY_QUOTAS`` may set.
QUOTA_FIELDS: tuple[str, ...] = (
    "max_concurrent_jobs",
    "max_chars_per_day",
    "max_books_in_flight",
    "allowed_lanes",
    "max_streams_per_key",
)


def parse_key_quotas(raw: str) -> dict[str, dict[str, Any]]:
    """Parse ``SPOOL_KEY_QUOTAS`` (JSON: owner name -> {quota field: value}) into a checked dict."""
    import json

    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(f"SPOOL_KEY_QUOTAS is not valid JSON ({exc}); e.g. '{{\"alice\": {{\"max_concurrent_jobs\": 2}}}}'.") from None
    if not isinstance(data, dict):
        raise SettingsError("SPOOL_KEY_QUOTAS must be a JSON object: owner name -> {quota field: value}.")
    quotas: dict[str, dict[str, Any]] = {}
    for owner, entry in data.items():
        if not isinstance(owner, str) or not OWNER_NAME_RE.match(owner) or not isinstance(entry, dict):
            raise SettingsError(
                f"SPOOL_KEY_QUOTAS: entry {owner!r} must be a valid owner name mapped to an object of quota fields."
            )
        unknown = sorted(set(entry) - set(QUOTA_FIELDS))
        if unknown:
            raise SettingsError(
                f"SPOOL_KEY_QUOTAS[{owner!r}]: unknown field(s) {', '.join(unknown)}; valid: {', '.join(QUOTA_FIELDS)}."
            )
        checked: dict[str, Any] = {}
        for name, value in entry.items():
            if name == "allowed_lanes":
                if not isinstance(value, list) or not all(v in defaults.CLIENT_PRIORITIES for v in value):
                    raise SettingsError(
                        f"SPOOL_KEY_QUOTAS[{owner!r}].allowed_lanes must be a list of {', '.join(defaults.CLIENT_PRIORITIES)}."
                    )
                checked[name] = tuple(value)
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SettingsError(f"SPOOL_KEY_QUOTAS[{owner!r}].{name} must be a whole number >= 0 (0: no limit).")
            else:
                checked[name] = value
        quotas[owner] = checked
    return quotas


def check_limits(settings: Settings) -> None:
    """Raise SettingsError when a limit setting cannot work."""
    for lane in settings.allowed_lanes:
        if lane not in defaults.CLIENT_PRIORITIES:
            raise SettingsError(
                f"SPOOL_ALLOWED_LANES: {lane!r} is not a lane; use some of {', '.join(defaults.CLIENT_PRIORITIES)}."
            )
    if not settings.allowed_lanes:
        raise SettingsError(f"SPOOL_ALLOWED_LANES is empty; allow at least one of {', '.join(defaults.CLIENT_PRIORITIES)}.")
    parse_key_quotas(settings.key_quotas)
