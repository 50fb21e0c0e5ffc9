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
#: opening clause whole (30: about five words, "Alice was not a bit hurt,"; 24 is the smallest accepted).
FIRST_SEGMENT_PHONEMES = 30

#: Queue new jobs are sent to: one per device class.
QUEUE = "cpu"

#: Device-class queues workers can consume.
QUEUES: tuple[str, ...] = ("cpu", "gpu")

#: Redis priority steps of the broker: a lower number is served first (kombu's Redis convention).
#: Steps 1 and 4 are the overflow of the high and normal lanes (``OVERFLOW_PRIORITIES``).
PRIORITY_STEPS: tuple[int, ...] = (0, 1, 3, 4, 6, 9)

#: Broker priority of each job priority name ("low" and "bulk" are for book segments and batch work).
PRIORITIES: dict[str, int] = {"high": 0, "normal": 3, "low": 6, "bulk": 9}

#: Broker step of a lane's jobs whose key already has more than ``FAIR_SHARE_JOBS`` unfinished jobs:
#: after every other key's jobs of the lane, still before the next lane (issue 19).
OVERFLOW_PRIORITIES: dict[str, int] = {"high": 1, "normal": 4}

#: Unfinished jobs of one key that ride its lane's own step; its further jobs wait on the overflow
#: step, so one key's burst does not make another key's job wait behind all of it (0: off).
FAIR_SHARE_JOBS = 2

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

#: Times a job (or a book batch) is started before it fails with ``attempts_exhausted``.
MAX_ATTEMPTS = 3

#: Seconds after its last enqueue or start before the reconciliation sweep may re-queue a job it finds
#: in no worker's hands and no broker message (covers the moment between a broker pop and the start).
RECONCILE_GRACE = 30.0

#: Seconds between two reconciliation sweeps (one worker sweeps at a time, under a Redis lock).
RECONCILE_INTERVAL = 15.0

#: Seconds a worker that lost Redis mid-job keeps retrying its writes before it gives the job up
#: (the sweep then re-queues it).
REDIS_RETRY_WINDOW = 120.0

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

# Limits, quotas and retention (issue 14, item 5) ---------------------------------------------------
# Every quota applies per owner (the name an API key maps to; "public" without keys); 0 means no limit.
# SPOOL_KEY_QUOTAS overrides them per owner.

#: Unfinished (queued or running) jobs one owner may have at once; beyond it ``POST /v1/jobs`` answers 429.
MAX_CONCURRENT_JOBS = 50

#: Text characters one owner may submit per calendar day (UTC midnight to midnight); beyond it 429.
MAX_CHARS_PER_DAY = 5_000_000

#: Books one owner may have in flight (planning, rendering or assembling) at once; beyond it 429.
MAX_BOOKS_IN_FLIGHT = 3

#: Priority lanes a key may ask for by default; another lane is refused with 403 (``lane_not_allowed``).
ALLOWED_LANES: tuple[str, ...] = ("normal", "high")

#: Per-owner overrides, as JSON: ``{"alice": {"max_concurrent_jobs": 2, "allowed_lanes": ["normal"]}}``.
KEY_QUOTAS = ""

#: Seconds a 429 for concurrent jobs, books or streams tells the client to wait (``Retry-After``).
QUOTA_RETRY_AFTER = 30

#: Bytes of audio (PCM) one job's live chunk stream keeps in Redis; older chunks are trimmed (16 MiB:
#: about 5.8 minutes of 24 kHz speech). Listeners that keep up never notice; late ones replay from storage.
STREAM_MAX_BYTES = 16 * 1024 * 1024

#: Open streams (audio streams, SSE event streams, waiting speech requests) one owner may hold at once.
MAX_STREAMS_PER_KEY = 8

#: Threads of one web process that streams may hold: WEB_THREADS (16) less 4 kept for the API.
MAX_STREAMS_PER_PROCESS = WEB_THREADS - 4

#: Open streams in all web processes together: WEB_WORKERS (2) x MAX_STREAMS_PER_PROCESS (12) = 24 of
#: the 32 web threads, so 8 (4 per process) always answer the API however many listeners idle.
MAX_STREAMS = WEB_WORKERS * MAX_STREAMS_PER_PROCESS

#: ``maxmemory`` of every Redis Spool starts (policy ``noeviction``: full means refused writes, never lost state).
REDIS_MAXMEMORY = "1gb"

#: Days stored job audio and book files are kept after their last write; 0 keeps them forever.
RETENTION_DAYS = 30.0

#: Days a segment checkpoint (content-keyed, shared between books) is kept after its last write; 0: forever.
CHECKPOINT_RETENTION_DAYS = 30.0

#: Seconds between retention sweeps (one worker sweeps per interval, under a Redis lock).
SWEEP_INTERVAL = 3600


#: Most lexicons one API key (owner) may keep (issue 17).
LEXICONS_PER_OWNER = 100

#: Versions of a lexicon kept for jobs and books queued before it changed (older ones are dropped).
LEXICON_VERSIONS_KEPT = 20

#: Largest lexicon upload (JSON or PLS body), in bytes.
LEXICON_MAX_BYTES = 2 * 1024 * 1024



# --------------------------------------------------------------------------------------------------
# Exposure and webhooks (docs/security.md)

#: Queue the webhook deliveries go to: a light task any worker (or a webhook-only one) consumes.
WEBHOOK_QUEUE = "webhooks"

#: Queue book uploads are parsed from: a light task (no model) in a child process with the limits
#: below, so an upload bomb costs neither the web process nor a render worker.
PARSE_QUEUE = "parse"

#: Address space (MiB) of the child process parsing one upload; past it the book fails ``book_too_large``.
PARSE_MEMORY_MB = 1024

#: Processes of the light worker ``spool serve`` starts for the parse and webhook queues (no model each).
LIGHT_WORKERS = 2

#: CPU seconds the child process parsing one upload may use; past them the book fails ``book_too_large``.
PARSE_CPU_SECONDS = 60

#: Seconds ``POST /v1/books`` with ``plan_only=true`` waits for the parse before answering 202 with a
#: link to fetch the plan later (``GET /v1/books/<id>/plan``).
PLAN_WAIT = 20.0

#: Seconds a ``plan_only`` request's plan (or its error) is kept for ``GET /v1/books/<id>/plan``.
PLAN_TTL = 3600

#: ``plan_only`` requests one web process lets wait for their plan at once; beyond them the answer is
#: 202 with the link at once, so waiting requests cannot hold every web thread.
PLAN_WAITERS = 4

#: Deliveries tried per finished job (the first one and the retries).
WEBHOOK_ATTEMPTS = 4

#: Seconds before the first retry of a webhook; each next wait is twice as long.
WEBHOOK_BACKOFF = 5.0

#: Webhook destinations allowed although private or loopback (CIDRs or host names), for tests
#: and private deployments; empty: only public addresses.
WEBHOOK_ALLOW: tuple[str, ...] = ()

#: PEM file of extra certificate authorities trusted for https webhook receivers (beside the
#: system's), e.g. a private deployment's own CA; empty: the system's trust store only.
WEBHOOK_CA_FILE = ""

#: Context string of a webhook secret derived from an API key (HMAC-SHA256 of it under the key).
WEBHOOK_KEY_CONTEXT = "spool-webhook-v1"

#: Seconds a receiver should accept between a webhook's signed timestamp and its own clock.
WEBHOOK_TOLERANCE = 300

#: Listening on a non-loopback address with no API keys is refused unless this is set.
ALLOW_ANONYMOUS = False

#: Origins (scheme://host[:port]) allowed to send state-changing browser requests besides the
#: server's own.
ALLOWED_ORIGINS: tuple[str, ...] = ()


# -- Fast first audio (issue 15 part 2) ------------------------------------------------------------

#: Intra-op threads of the second session a worker renders a stream's opening on while the other
#: cores are idle (0: off; only used where the machine has that many cores).
FAST_START_THREADS = 2

#: How many opening segments of a job may run on the fast-start session.
FAST_START_SEGMENTS = 4


#: Seconds a storage write (or read) is retried with backoff on outages (connection errors, 5xx, throttling).
STORAGE_RETRY_WINDOW = 180.0

#: Seconds the first storage retry waits; each later wait doubles, with jitter, up to the cap below.
STORAGE_RETRY_BASE = 0.5

#: Longest wait between two storage retries, in seconds.
STORAGE_RETRY_MAX_DELAY = 10.0


#: Seconds the book assembly lock lives without renewal; the assembler renews it every third of this.
ASSEMBLY_LOCK_TTL = 300

#: Encode the chapter MP3s on a second thread while the M4B is encoded (the other cores are
#: idle at the end of a book; the files are the same either way).
ASSEMBLY_CONCURRENT = True

# -- Automatic QA (issue 17 part 4) ----------------------------------------------------------------

#: Word error rate above which QA flags a segment (0.4: two words wrong in five). A clean render
#: measures 0 to about 0.2 (a name or a spelling heard differently); silence or the wrong speech 1.0.
QA_THRESHOLD = 0.4

#: Intra-op threads of a worker's QA recogniser (Whisper tiny.en); 1 keeps it off the model's cores.
QA_THREADS = 1

# -- Status: why a job or book waits (issue 19) -----------------------------------------------------

#: Wall seconds one segment takes on one worker, assumed for queue ETAs until workers have measured it.
SECONDS_PER_SEGMENT = 2.5

#: Text characters per segment, assumed to estimate a queued job's segments until jobs have measured it.
CHARS_PER_SEGMENT = 90.0

#: Most queued jobs ahead of one that its status reads to count their segments.
MAX_AHEAD_READ = 500
