"""Book tasks: parse an upload (light, no model); plan; render the fair next batch (or a named one); assemble."""

from __future__ import annotations

from typing import Any

from service import book_parse, book_render, dispatch
from service.logging import log_context
from service.recovery import batch_failed
from service.task_names import BOOK_ASSEMBLE, BOOK_NEXT, BOOK_PARSE, BOOK_PLAN, BOOK_RENDER
from tasks import worker
from tasks.celery_app import celery_app


@celery_app.task(name=BOOK_PARSE, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def parse_book(self: Any, item_id: str, kind: str = book_parse.BOOK) -> str:
    """Parse an uploaded book (or a plan_only request) in a child process with limits; queue its plan."""
    with log_context(job_id=item_id):
        return book_parse.parse_upload(worker.get_services(), item_id, kind, worker.worker_name())


@celery_app.task(name=BOOK_PLAN, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def plan_book(self: Any, book_id: str) -> int:
    """Split a submitted book into segments and queue its batches."""
    with log_context(job_id=book_id):
        return book_render.plan_book(
            worker.get_services().books, book_id, worker.worker_name(), engine=worker.get_engine
        )


@celery_app.task(name=BOOK_RENDER, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def render_batch(self: Any, book_id: str, batch: int) -> list[str]:
    """Render segments of one batch that have no checkpoint yet; return the checkpoint keys."""
    with log_context(job_id=book_id):
        store = worker.get_services().books
        worker.set_current_batch(book_id, batch)
        try:
            return book_render.render_batch(store, worker.get_engine(), book_id, batch, worker.worker_name())
        except Exception as exc:  # storage or engine error: retried, then the book fails with the reason
            batch_failed(store, book_id, batch, exc)
            return []
        finally:
            worker.set_current_batch(None)


@celery_app.task(name=BOOK_NEXT, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def render_next(self: Any, queue: str) -> list[str]:
    """A dispatch token: render the batch that is fair next on ``queue`` (service.dispatch); none: no-op."""
    svc = worker.get_services()
    picked = dispatch.take_next(svc, queue, worker.worker_name())
    if picked is None:
        return []
    book_id, batch = picked
    with log_context(job_id=book_id):
        worker.set_current_batch(book_id, batch)
        # Beat now: no message names this batch, so the sweep learns who holds it from the heartbeat.
        worker.beat_now()
        try:
            return book_render.render_batch(svc.books, worker.get_engine(), book_id, batch, worker.worker_name())
        except Exception as exc:  # storage or engine error: retried, then the book fails with the reason
            batch_failed(svc.books, book_id, batch, exc)
            return []
        finally:
            worker.set_current_batch(None)


@celery_app.task(
    name=BOOK_ASSEMBLE, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def assemble_book(self: Any, book_id: str) -> list[str]:
    """Join the checkpoints into chapters and write the audiobook, subtitles, manifest and zip."""
    with log_context(job_id=book_id):
        return book_render.assemble_book(worker.get_services().books, worker.get_engine(), book_id)
