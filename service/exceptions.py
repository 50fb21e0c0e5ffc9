"""Errors of the job service; each carries the HTTP status it is answered with."""

from __future__ import annotations

from engine.exceptions import SpoolError


class ServiceError(SpoolError):
    """Base of the service's own errors."""

    code = "service_error"
    http_status = 400


class InvalidRequestError(ServiceError):
    """A request field is missing, of the wrong type, or out of range."""

    code = "invalid_request"
    http_status = 400


class MalformedJSONError(ServiceError):
    """The body is not valid JSON, or not a JSON object."""

    code = "malformed_json"
    http_status = 400


class UnsupportedMediaTypeError(ServiceError):
    """The body is not sent as ``application/json``."""

    code = "unsupported_media_type"
    http_status = 415


class PayloadTooLargeError(ServiceError):
    """The body or the text in it is larger than the configured limit."""

    code = "payload_too_large"
    http_status = 413


class AuthenticationError(ServiceError):
    """No API key, or one that is not configured."""

    code = "unauthorized"
    http_status = 401


class NotFoundError(ServiceError):
    """The resource does not exist (or belongs to another API key)."""

    code = "not_found"
    http_status = 404


class JobNotFoundError(NotFoundError):
    """No job with this id is visible to the caller."""

    code = "job_not_found"


class LexiconNotFoundError(NotFoundError):
    """No lexicon with this id (or version) is visible to the caller."""

    code = "lexicon_not_found"


class MethodNotAllowedError(ServiceError):
    """The route exists but not for this HTTP method."""

    code = "method_not_allowed"
    http_status = 405


class ConflictError(ServiceError):
    """The request conflicts with the resource's current state."""

    code = "conflict"
    http_status = 409


class JobNotReadyError(ConflictError):
    """The job has no audio yet (or never will: it failed or was cancelled)."""

    code = "job_not_ready"


class IdempotencyConflictError(ServiceError):
    """An Idempotency-Key was reused with a different request body."""

    code = "idempotency_conflict"
    http_status = 422


class InvalidStateTransitionError(ConflictError):
    """A job cannot move from its current state to the one asked for."""

    code = "invalid_state_transition"


class RangeNotSatisfiableError(ServiceError):
    """The Range header asks for bytes outside the file."""

    code = "range_not_satisfiable"
    http_status = 416


class ServiceUnavailableError(ServiceError):
    """Redis, the broker or storage cannot be reached; the request can be retried."""

    code = "service_unavailable"
    http_status = 503


class EnqueueError(ServiceUnavailableError):
    """The job was stored but could not be put on the queue."""

    code = "enqueue_failed"


class StorageError(ServiceUnavailableError):
    """A storage operation failed."""

    code = "storage_error"


class StorageUnavailableError(StorageError):
    """Storage could not be reached (connection error, 5xx, throttling): waiting may fix it."""

    code = "storage_unavailable"


class AssemblyLockLostError(ConflictError):
    """A book's assembly lock expired or was taken over while this worker assembled it."""

    code = "assembly_lock_lost"


class StorageKeyNotFoundError(NotFoundError):
    """No object is stored under the key."""

    code = "storage_key_not_found"


class InvalidKeyError(ServiceError):
    """An id or storage key part does not match its strict pattern."""

    code = "invalid_key"
    http_status = 400


class JobTimeoutError(ServiceError):
    """A synchronous request waited longer than its limit; the job goes on and can be polled."""

    code = "job_timeout"
    http_status = 504


class JobFailedError(ServiceError):
    """A job the request waited for ended failed or cancelled."""

    code = "job_failed"
    http_status = 502


class JobCancelledError(ServiceError):
    """The job was cancelled by its owner."""

    code = "cancelled"
    http_status = 409


class FeatureUnavailableError(ServiceError):
    """A feature whose module is not installed in this deployment."""

    code = "feature_unavailable"
    http_status = 501


class StreamAbortedError(ServiceError):
    """An audio response already under way was cut off because its job failed or was cancelled."""

    code = "stream_aborted"
    http_status = 502


class ListenerGoneError(ServiceError):
    """The client of a stream hung up while it waited for audio; the stream ends and frees its slot.

    Never answered (nobody is left to read it); 499 is the status proxies log for a client that left.
    """

    code = "listener_gone"
    http_status = 499


# Quotas and limits (issue 14, item 5) --------------------------------------------------------------
class QuotaExceededError(ServiceError):
    """A per-key quota or a deployment limit is used up; ``details`` name the limit, its value and the use."""

    code = "rate_limit_exceeded"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, **details: object) -> None:
        super().__init__(message, retry_after=retry_after, **details)
        #: Seconds the client should wait before trying again (the ``Retry-After`` header).
        self.retry_after = max(1, int(retry_after))


class LaneNotAllowedError(ServiceError):
    """The API key may not use the priority lane it asked for."""

    code = "lane_not_allowed"
    http_status = 403


class AttemptsExhaustedError(ServiceError):
    """A job or book batch was started ``SPOOL_MAX_ATTEMPTS`` times without finishing (its worker died each time)."""

    code = "attempts_exhausted"
    http_status = 500


class BatchFailedError(ServiceError):
    """A book's render batch kept failing (storage or engine error) after every retry."""

    code = "batch_failed"
    http_status = 500


# Automatic QA (issue 17 part 4) ----------------------------------------------------------------------
class QaNotInstalledError(InvalidRequestError):
    """``qa=true`` was asked of a deployment without the ASR packages (or for a language QA cannot hear)."""

    code = "qa_not_installed"
    http_status = 400


class BookFixError(InvalidRequestError):
    """A fix of a finished book (PATCH /v1/books/<id>) is malformed or does not fit the book's text."""

    code = "invalid_book_fix"


class BookBusyError(ConflictError):
    """The book is rendering (or has never succeeded), so it cannot be fixed now."""

    code = "book_busy"


class BookTooLargeError(ServiceError):
    """Parsing the upload ran past the parser's memory or CPU limit (SPOOL_PARSE_MEMORY_MB, SPOOL_PARSE_CPU_SECONDS)."""

    code = "book_too_large"
    http_status = 413


class BookUnreadableError(ServiceError):
    """The parser of an upload stopped without an answer (a crash, not a limit)."""

    code = "book_unreadable"
    http_status = 400
