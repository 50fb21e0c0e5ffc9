"""Named defaults of every Spool setting; `config.settings.Settings.from_env` overrides them."""

from __future__ import annotations

#: Environment variable prefix of every setting.
ENV_PREFIX = "SPOOL_"

#: Redis holding the broker queues, job state and chunk streams.
REDIS_URL = "redis://127.0.0.1:6379/0"

#: Prefix of every Redis key Spool writes (the broker's own keys excepted).
KEY_PREFIX = "spool:"

#: Prefix kombu puts before the broker's keys (queues, unacked messages); empty shares the db plainly.
BROKER_KEY_PREFIX = ""

#: Where results go: ``file:///abs/dir``, a plain directory path, or ``s3://bucket/prefix?endpoint=URL``.
STORAGE_URL = "var/storage"

#: Region passed to boto3 for S3 storage.
S3_REGION = "us-east-1"

#: Directory holding the model, vocabulary and voices (``spool models fetch``).
ASSETS_DIR = "~/.cache/spool"

#: Intra-op threads per engine; 0: ``spool serve`` splits the cores among workers, else onnxruntime picks.
ENGINE_THREADS = 0

#: Phoneme budget of a job's first segment: smaller starts playback sooner, larger keeps the
#: opening clause whole (40 fits "Alice was not a bit hurt,"; 24 is the smallest accepted).
FIRST_SEGMENT_PHONEMES = 40

#: Queue new jobs are sent to: one per device class.
QUEUE = "cpu"

#: Device-class queues workers can consume.
QUEUES: tuple[str, ...] = ("cpu", "gpu")

#: Redis priority steps of the broker: a lower number is served first (kombu's Redis convention).
PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)

#: Broker priority of each job priority name ("low" and "bulk" are for book segments and batch work).
PRIORITIES: dict[str, int] = {"high": 0, "normal": 3, "low": 6, "bulk": 9}

#: Priority names a client may ask for in ``POST /v1/jobs``.
CLIENT_PRIORITIES: tuple[str, ...] = ("normal", "high")

#: Priority of a job when the client names none.
PRIORITY = "normal"

#: Seconds job state, indexes and idempotency keys are kept in Redis after their last change (7 days).
JOB_TTL = 7 * 24 * 3600

#: Longest text accepted by one job, in characters.
MAX_TEXT_CHARS = 100_000

#: Largest JSON request body, in bytes (100,000 characters escaped as \\uXXXX fit).
MAX_BODY_BYTES = 1_000_000

#: Largest upload (book files), in bytes; the app-wide request size cap.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024

#: Seconds a task may run before SoftTimeLimitExceeded is raised inside it.
TASK_SOFT_TIME_LIMIT = 3600

#: Seconds after which the worker child running a task is killed.
TASK_TIME_LIMIT = 3900

#: Seconds an unacknowledged message waits before the broker hands it to another worker; above the hard limit.
VISIBILITY_TIMEOUT = 4 * 3600

#: Seconds ``POST /v1/audio/speech`` waits for its job before answering 504 with the job id.
SPEECH_TIMEOUT = 600

#: Seconds a webhook POST may take.
WEBHOOK_TIMEOUT = 5.0

#: Most entries kept in one job's chunk stream.
STREAM_MAXLEN = 10_000

#: Seconds a finished job's chunk stream stays in Redis; later listeners replay from storage.
STREAM_TTL = 3600

#: Seconds a presigned download URL stays valid.
PRESIGN_EXPIRES = 3600

#: Answer ``GET /v1/jobs/<id>/audio`` with a redirect to a presigned URL when the storage has one.
AUDIO_REDIRECT = False

#: Seconds between worker heartbeats.
HEARTBEAT_INTERVAL = 10.0

#: Seconds after which a worker that stopped beating is no longer listed.
HEARTBEAT_TTL = 30

#: Wall seconds of rendering per text character assumed for ETAs until workers have measured one.
SECONDS_PER_CHAR = 0.03

#: Weight of the newest measurement in the moving average of seconds per character.
RATE_SMOOTHING = 0.3

#: Voice used when a request names none.
VOICE = "af_heart"

#: Speed used when a request names none.
SPEED = 1.0

#: Audio format of a job when the request names none.
FORMAT = "mp3"

#: Logging level of the web app and workers.
LOG_LEVEL = "INFO"

#: Log line format: "text" or "json".
LOG_FORMAT = "text"

#: Address ``spool serve`` binds.
HOST = "127.0.0.1"

#: Port ``spool serve`` binds.
PORT = 8000

#: Base URL the CLI talks to.
URL = "http://127.0.0.1:8000"

#: Threads per gunicorn worker (gthread): waits on speech jobs and streams hold a thread each.
WEB_THREADS = 16

#: Gunicorn worker processes.
WEB_WORKERS = 2

#: Directory for runtime files of ``spool serve`` (private Redis, storage, logs).
VAR_DIR = "var"

#: Most jobs one ``GET /v1/jobs`` page returns.
MAX_PAGE_SIZE = 200

#: Jobs per page when the request gives no ``limit``.
PAGE_SIZE = 50

#: Seconds a storage write (or read) is retried with backoff on outages (connection errors, 5xx, throttling).
STORAGE_RETRY_WINDOW = 180.0

#: Seconds the first storage retry waits; each later wait doubles, with jitter, up to the cap below.
STORAGE_RETRY_BASE = 0.5

#: Longest wait between two storage retries, in seconds.
STORAGE_RETRY_MAX_DELAY = 10.0

#: Times a job whose upload still failed after the storage window is put back in the queue (its audio kept).
STORAGE_REQUEUES = 3

#: Seconds the book assembly lock lives without renewal; the assembler renews it every third of this.
ASSEMBLY_LOCK_TTL = 300
