"""The Celery task names: the web process and recovery send them, ``tasks/`` registers them."""

from __future__ import annotations

#: Render one job (``tasks.synthesis.synthesize``).
SYNTHESIZE = "spool.synthesize"

#: Parse an uploaded book (or a ``plan_only`` request) in a limited child process (``tasks.books.parse_book``),
#: on the light parse queue.
BOOK_PARSE = "spool.book_parse"

#: Split a submitted book into segments and queue its batches (``tasks.books.plan_book``).
BOOK_PLAN = "spool.book_plan"

#: Render one batch of a book's segments into checkpoints (``tasks.books.render_batch``).
BOOK_RENDER = "spool.book_render"

#: Render the fair next ready batch of a queue's books (``tasks.books.render_next``): the token of
#: ``service.dispatch``, one per ready batch.
BOOK_NEXT = "spool.book_next"

#: Assemble a book whose segments are all rendered (``tasks.books.assemble_book``).
BOOK_ASSEMBLE = "spool.book_assemble"

#: Deliver one job's webhook (``tasks.webhooks.send_webhook``), on the webhook queue.
WEBHOOK = "spool.webhook"
