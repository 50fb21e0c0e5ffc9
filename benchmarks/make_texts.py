"""Write the benchmark texts under benchmarks/texts/ from the Alice EPUB (public domain)."""

from __future__ import annotations

import argparse
import html
import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

HERE = Path(__file__).resolve().parent
DEFAULT_EPUB = HERE.parent.parent / "shared" / "books" / "alice-in-wonderland-pg11.epub"
TEXTS = HERE / "texts"

_BLOCK = re.compile(r"<(h[1-6]|p)\b[^>]*>(.*?)</\1>", re.S | re.I)
_TAG = re.compile(r"<[^>]+>")


def _spine_documents(epub: Path) -> list[str]:
    """Return the XHTML documents of an EPUB in spine order (stdlib only)."""
    with zipfile.ZipFile(epub) as zf:
        container = ElementTree.fromstring(zf.read("META-INF/container.xml"))
        ns = {"c": "urn:oasis:names:tc:opendocument:xmlns:container"}
        opf_path = container.find(".//c:rootfile", ns).attrib["full-path"]
        opf = ElementTree.fromstring(zf.read(opf_path))
        ons = {"o": "http://www.idpf.org/2007/opf"}
        base = opf_path.rsplit("/", 1)[0] + "/" if "/" in opf_path else ""
        manifest = {i.attrib["id"]: i.attrib["href"] for i in opf.find("o:manifest", ons)}
        docs = []
        for ref in opf.find("o:spine", ons):
            href = manifest[ref.attrib["idref"]]
            docs.append(zf.read(base + href).decode("utf-8"))
        return docs


def chapters(epub: Path) -> list[tuple[str, list[str]]]:
    """Return (title, paragraphs) for each spine document that starts with a CHAPTER heading."""
    out = []
    for doc in _spine_documents(epub):
        blocks = []
        for tag, body in _BLOCK.findall(doc):
            text = html.unescape(re.sub(r"\s+", " ", _TAG.sub("", body))).strip()
            if text and not re.fullmatch(r"[*\s]+", text):  # drop "* * * *" separators
                blocks.append((tag.lower(), text))
        if blocks and blocks[0][0].startswith("h") and blocks[0][1].upper().startswith("CHAPTER"):
            out.append((blocks[0][1], [t for _, t in blocks[1:]]))
    return out


def words(text: str) -> int:
    """Count whitespace-separated words."""
    return len(text.split())


def main() -> None:
    """Extract the texts and print their word counts."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epub", type=Path, default=DEFAULT_EPUB)
    args = parser.parse_args()
    chs = chapters(args.epub)
    TEXTS.mkdir(exist_ok=True)
    files: dict[str, str] = {}
    for n, (title, paras) in enumerate(chs[:2], start=1):
        files[f"alice-ch{n}.txt"] = title + "\n\n" + "\n\n".join(paras) + "\n"
    title, paras = chs[0]
    # paragraph: one real paragraph of 60-120 words (the first one in that range)
    files["paragraph.txt"] = next(p for p in paras if 60 <= words(p) <= 120) + "\n"
    # about 60 s of speech (~170 words): whole paragraphs of chapter 1 in order, skipping any that overshoot
    files["minute.txt"] = _fill(paras, 175) + "\n"
    # long chapter: chapter 1 from the start up to ~1,200 words (whole paragraphs)
    files["chapter.txt"] = title + "\n\n" + _take(paras, 1200 - words(title)) + "\n"
    for name, text in files.items():
        (TEXTS / name).write_text(text, encoding="utf-8")
        print(f"{name:16} {words(text):5d} words")


def _take(paras: list[str], target: int) -> str:
    """Join whole paragraphs until at least ``target`` words."""
    out: list[str] = []
    for p in paras:
        out.append(p)
        if words("\n\n".join(out)) >= target:
            break
    return "\n\n".join(out)


def _fill(paras: list[str], cap: int) -> str:
    """Join paragraphs in order, skipping those that would take the total over ``cap`` words."""
    out: list[str] = []
    for p in paras:
        if words("\n\n".join([*out, p])) <= cap:
            out.append(p)
    return "\n\n".join(out)


if __name__ == "__main__":
    main()
