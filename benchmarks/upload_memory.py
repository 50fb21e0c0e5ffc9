"""Peak memory and time of the web process for hostile book uploads (issue 14, item 2).

Runs the app of whichever checkout ``PYTHONPATH`` names in this process (Flask's test client, local
storage in a temporary directory, Redis with key and broker prefixes of its own, queues no worker
consumes) and POSTs each upload once, printing the status, the wall time and how much the process's
peak RSS (VmHWM, reset before each request through /proc/self/clear_refs) grew. Compare two
checkouts: ``PYTHONPATH=/work/main python benchmarks/upload_memory.py`` and the same with this one.

Shapes: ``dense`` (a spine document of N MiB of distinct paragraphs: it passes every zip-bomb check,
so a web process that parses uploads pays for it) and ``zeros`` (one 64 MiB member of zeros: refused
by the ratio check everywhere).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

from app import create_app
from config.settings import Settings

CONTAINER = (
    '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
    '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
    "</rootfiles></container>"
)
OPF = (
    '<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0">'
    '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Upload</dc:title></metadata>'
    '<manifest><item id="d0" href="a.xhtml" media-type="application/xhtml+xml"/></manifest>'
    '<spine><itemref idref="d0"/></spine></package>'
)


def epub(doc: bytes, extra: dict[str, bytes]) -> bytes:
    """A one-document EPUB with ``extra`` members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        zf.writestr("META-INF/container.xml", CONTAINER)
        zf.writestr("OEBPS/content.opf", OPF)
        zf.writestr("OEBPS/a.xhtml", b'<html xmlns="http://www.w3.org/1999/xhtml"><body>' + doc + b"</body></html>")
        for name, data in extra.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def dense(megabytes: int) -> bytes:
    """Distinct paragraphs (a random token each), so the archive inflates well under 100 times."""
    rng = random.Random(14)
    tail = b" lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.</p>\n"
    lines, size = [], 0
    while size < megabytes * 1024 * 1024:
        lines.append(b"<p>w%06x" % rng.getrandbits(24) + tail)
        size += len(lines[-1])
    return epub(b"".join(lines), {})


def status_kb(field: str) -> int:
    """A VmXXX figure of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def main() -> None:
    """Measure each shape once and print a JSON line per shape."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=20, help="MiB of text in the dense EPUB")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        redis_url=args.redis,
        key_prefix=f"upload-bench-{tag}:",
        broker_key_prefix=f"upload-bench-{tag}-b:",
        storage_url=tempfile.mkdtemp(prefix="spool-upload-bench-"),
        queue=f"idle{tag}",
    )
    app = create_app(settings)
    client = app.test_client()
    shapes = {f"dense {args.mb} MiB": dense(args.mb), "zeros 64 MiB": epub(b"<p>Hi.</p>", {"OEBPS/z.bin": b"\0" * (64 << 20)})}
    try:
        # One small upload first: the first request's imports (Celery, kombu) are not the upload's cost.
        client.post("/v1/books", data={"file": (io.BytesIO(b"Chapter 1\n\nWarm."), "w.txt")},
                    content_type="multipart/form-data")
        for name, data in shapes.items():
            Path("/proc/self/clear_refs").write_text("5")
            before = status_kb("VmHWM")
            started = time.perf_counter()
            response = client.post(
                "/v1/books", data={"file": (io.BytesIO(data), "u.epub")}, content_type="multipart/form-data"
            )
            took = time.perf_counter() - started
            grown = status_kb("VmHWM") - before
            body = response.get_json() or {}
            print(json.dumps({
                "shape": name,
                "upload_bytes": len(data),
                "status": response.status_code,
                "state_or_error": body.get("state") or (body.get("error") or {}).get("code"),
                "seconds": round(took, 3),
                "peak_rss_growth_mib": round(grown / 1024, 1),
            }))
    finally:
        svc = app.extensions["spool"]
        for key in svc.redis.scan_iter(match=f"upload-bench-{tag}*"):
            svc.redis.delete(key)
        svc.close()


if __name__ == "__main__":
    main()
