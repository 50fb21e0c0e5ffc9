"""The states of jobs and books, and which of them are final."""

from __future__ import annotations

from enum import Enum

#: States nothing more happens after, for jobs and books alike.
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


class _State(str, Enum):
    """A state that is also its own string, so it goes to Redis, JSON and comparisons as its value."""

    def __str__(self) -> str:
        return self.value

    @property
    def is_terminal(self) -> bool:
        """True for a state nothing more happens after."""
        return self.value in FINISHED


class JobState(_State):
    """Where a job is: waiting, rendering, or finished one of three ways."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BookState(_State):
    """Where a book is: its upload being parsed, waiting, rendering its segments, being assembled, or finished."""

    # Accepted and stored; a light worker parses the upload (in a child process with limits).
    PARSING = "parsing"
    QUEUED = "queued"
    RENDERING = "rendering"
    ASSEMBLING = "assembling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Job state names, in the order jobs pass through them (the job store's per-state indexes use it).
JOB_STATES: tuple[str, ...] = tuple(state.value for state in JobState)

#: Book state names, in the order books pass through them.
BOOK_STATES: tuple[str, ...] = tuple(state.value for state in BookState)
