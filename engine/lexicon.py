"""Pronunciation lexicons: words or phrases mapped to IPA phonemes or to a respelling.

A :class:`Lexicon` is applied to a segment's spoken (normalised) text just before G2P
(:func:`engine.g2p.G2PRegistry` takes it): a phoneme entry becomes an override marker that the
G2P turns into exactly those phonemes for that word, an alias entry replaces the word by its
respelling. Nothing else in the text changes. Matching is one left-to-right pass over the text
with a character trie (longest match first, matches never overlap); a whole-word entry is only
tried where a word starts, so the cost is linear in the text for a bounded grapheme length.

Lexicons are read from and written to JSON (``to_dict``/``from_dict``) and W3C PLS 1.0
(``from_pls``/``to_pls``). Phonemes are checked against Kokoro's vocabulary with
:func:`check_ipa`; a bad symbol raises :class:`InvalidPhonemesError` naming each one and its
position. ``version`` is a digest of the entries; :meth:`Lexicon.digest_for` is the digest of only
the entries a text contains, so a checkpoint keyed on it changes only where a changed entry is used.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from xml.etree import ElementTree

from engine.exceptions import InvalidPhonemesError, LexiconError

__all__ = [
    "MAX_ENTRIES",
    "MAX_GRAPHEME_CHARS",
    "MAX_PLS_BYTES",
    "MAX_VALUE_CHARS",
    "OVERRIDE_CLOSE",
    "OVERRIDE_OPEN",
    "OVERRIDE_SEP",
    "Lexicon",
    "LexiconEntry",
    "check_ipa",
    "override",
]

#: Most entries one lexicon may hold.
MAX_ENTRIES = 10_000
#: Longest grapheme (word or phrase) of an entry, in characters; bounds the matcher's work per position.
MAX_GRAPHEME_CHARS = 100
#: Most words (and punctuation marks) in one grapheme; bounds the matcher's walk from each word.
MAX_GRAPHEME_WORDS = 12
#: Most entries that match inside words (``whole_word`` false): they form one alternation.
MAX_INNER_ENTRIES = 200
#: Longest phoneme string or alias of an entry, in characters.
MAX_VALUE_CHARS = 400
#: Largest PLS document accepted, in bytes.
MAX_PLS_BYTES = 2 * 1024 * 1024
#: Longest lexicon name.
MAX_NAME_CHARS = 100

#: Private-use characters marking a phoneme override in spoken text: OPEN word SEP ipa CLOSE.
#: The normaliser drops private-use characters from user text, so only Spool writes them.
OVERRIDE_OPEN, OVERRIDE_SEP, OVERRIDE_CLOSE = "\ue000", "\ue001", "\ue002"

#: Symbols refused in phonemes although Kokoro has tokens for them: they delimit overrides.
_RESERVED = frozenset("[]()" + OVERRIDE_OPEN + OVERRIDE_SEP + OVERRIDE_CLOSE)

#: An override marker as a whole (group 1: the word, group 2: the phonemes).
OVERRIDE_PATTERN = re.compile(
    f"{OVERRIDE_OPEN}([^{OVERRIDE_OPEN}-{OVERRIDE_CLOSE}]*){OVERRIDE_SEP}([^{OVERRIDE_OPEN}-{OVERRIDE_CLOSE}]*){OVERRIDE_CLOSE}"
)
_MARKERS = re.compile(
    f"({OVERRIDE_OPEN}[^{OVERRIDE_OPEN}-{OVERRIDE_CLOSE}]*{OVERRIDE_SEP}[^{OVERRIDE_OPEN}-{OVERRIDE_CLOSE}]*{OVERRIDE_CLOSE})"
)

PLS_NAMESPACE = "http://www.w3.org/2005/01/pronunciation-lexicon"
#: Namespace of the two entry flags PLS has no attribute for (case sensitivity, whole word).
SPOOL_PLS_NAMESPACE = "urn:spool:pls"


def override(word: str, ipa: str) -> str:
    """Spoken-text marker saying ``word`` is pronounced ``ipa`` (read by :mod:`engine.g2p`)."""
    return f"{OVERRIDE_OPEN}{word}{OVERRIDE_SEP}{ipa}{OVERRIDE_CLOSE}"


def check_ipa(ipa: str, vocab: Iterable[str], *, where: str = "phonemes") -> str:
    """Return ``ipa`` stripped if every symbol has a Kokoro token; else raise naming each bad one."""
    if not isinstance(ipa, str) or not ipa.strip():
        raise InvalidPhonemesError(f"The {where} are empty; give IPA such as 'hɜːmˈaɪəni'.")
    known = vocab if isinstance(vocab, (set, frozenset, dict)) else set(vocab)
    bad = [
        {"symbol": ch, "position": i, "codepoint": f"U+{ord(ch):04X}"}
        for i, ch in enumerate(ipa)
        if (ch not in known and ch != " ") or ch in _RESERVED
    ]
    if bad:
        shown = ", ".join(f"{b['symbol']!r} ({b['codepoint']}) at {b['position']}" for b in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise InvalidPhonemesError(
            f"The {where} {ipa!r} use symbols Kokoro has no token for: {shown}{more}. Use the IPA symbols "
            "of Kokoro's vocabulary (misaki's phoneme set: e.g. ɹ not r, ɡ not g, tie-free affricates ʤ ʧ); "
            "brackets and parentheses are not phonemes.",
            bad_symbols=bad,
            phonemes=ipa,
        )
    return ipa.strip()


#: A word (a run of letters, digits, underscores) or one other visible character; group 1: space before it.
_TOKEN = re.compile(r"(\s+)?(\w+|[^\w\s])")


def _tokens(text: str) -> list[tuple[str, str]]:
    """Trie keys of a grapheme: each word or mark lower-cased, with a leading space if one preceded it."""
    out = []
    for k, m in enumerate(_TOKEN.finditer(text)):
        out.append(((" " if m.group(1) and k else "") + m.group(2).lower(), m.group(2)))
    return out


def _same_words(grapheme: str, tokens: list[tuple[int, int, bool, str]], i: int, j: int) -> bool:
    """True when text tokens ``i..j`` spell ``grapheme`` with the same letter case."""
    return [raw for _, raw in _tokens(grapheme)] == [tokens[k][3] for k in range(i, j)]


def _trie_pattern(words: list[str]) -> re.Pattern[str]:
    """One case-insensitive regex for ``words`` with shared prefixes factored (longest match first).

    Each position costs one branch per character instead of one try per word.
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word.lower():
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict) -> str:
        ends = "" in node
        branches = [re.escape(ch) + build(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return re.compile(build(trie), re.IGNORECASE)


def _merge(a: list[Match], b: list[Match]) -> list[Match]:
    """Two match lists as one: leftmost first, the longer at one start, overlaps dropped."""
    out: list[Match] = []
    for m in sorted(a + b, key=lambda m: (m.start, -m.end)):
        if not out or m.start >= out[-1].end:
            out.append(m)
    return out


@dataclass(frozen=True)
class LexiconEntry:
    """A word or phrase and how to say it: IPA ``phonemes`` or an ``alias`` (respelling), one of the two."""

    grapheme: str
    phonemes: str | None = None
    alias: str | None = None
    case_sensitive: bool = False
    whole_word: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.grapheme, str) or not self.grapheme.strip():
            raise LexiconError("A lexicon entry needs a grapheme (the word or phrase it applies to).")
        if self.grapheme != self.grapheme.strip() or len(self.grapheme) > MAX_GRAPHEME_CHARS:
            raise LexiconError(
                f"The grapheme {self.grapheme[:40]!r} must have no leading or trailing spaces and at most "
                f"{MAX_GRAPHEME_CHARS} characters."
            )
        if any(ch in _RESERVED or ch in "\n\r\t" for ch in self.grapheme):
            raise LexiconError(
                f"The grapheme {self.grapheme!r} holds a bracket, tab or line break; remove it."
            )
        if len(_tokens(self.grapheme)) > MAX_GRAPHEME_WORDS:
            raise LexiconError(
                f"The grapheme {self.grapheme[:40]!r} has more than {MAX_GRAPHEME_WORDS} words and marks; shorten it."
            )
        if (self.phonemes is None) == (self.alias is None):
            raise LexiconError(
                f"The entry for {self.grapheme!r} needs exactly one of 'phonemes' (IPA) or 'alias' (a respelling)."
            )
        value = self.phonemes if self.phonemes is not None else self.alias
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_VALUE_CHARS:
            raise LexiconError(
                f"The {'phonemes' if self.phonemes is not None else 'alias'} of {self.grapheme!r} must be "
                f"a non-empty string of at most {MAX_VALUE_CHARS} characters."
            )
        if self.alias is not None and any(ch in _RESERVED for ch in self.alias):
            raise LexiconError(f"The alias of {self.grapheme!r} holds a bracket; write it as plain words.")
        for flag in ("case_sensitive", "whole_word"):
            if not isinstance(getattr(self, flag), bool):
                raise LexiconError(f"{flag} of {self.grapheme!r} must be true or false.")

    def to_dict(self) -> dict[str, object]:
        """JSON form: only the fields that are set."""
        out: dict[str, object] = {"grapheme": self.grapheme}
        if self.phonemes is not None:
            out["phonemes"] = self.phonemes
        else:
            out["alias"] = self.alias
        out["case_sensitive"] = self.case_sensitive
        out["whole_word"] = self.whole_word
        return out

    @classmethod
    def from_dict(cls, data: object) -> LexiconEntry:
        """Build an entry from its JSON form; unknown keys are refused."""
        if not isinstance(data, Mapping):
            raise LexiconError(f"A lexicon entry must be an object, got {type(data).__name__}.")
        allowed = {"grapheme", "phonemes", "alias", "case_sensitive", "whole_word"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise LexiconError(f"Unknown entry fields {unknown}; allowed: {sorted(allowed)}.")
        return cls(
            grapheme=data.get("grapheme"),  # type: ignore[arg-type]
            phonemes=data.get("phonemes"),  # type: ignore[arg-type]
            alias=data.get("alias"),  # type: ignore[arg-type]
            case_sensitive=data.get("case_sensitive", False),  # type: ignore[arg-type]
            whole_word=data.get("whole_word", True),  # type: ignore[arg-type]
        )

    def canonical(self) -> str:
        """A stable JSON string of the entry, for digests."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class Match:
    """One entry found in a text at ``[start, end)``."""

    start: int
    end: int
    entry: LexiconEntry


@dataclass
class Lexicon:
    """Ordered entries (a later entry for the same grapheme and case rule replaces an earlier one)."""

    entries: list[LexiconEntry] = field(default_factory=list)
    name: str = ""
    lang: str | None = None

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_ENTRIES:
            raise LexiconError(
                f"A lexicon holds at most {MAX_ENTRIES} entries, not {len(self.entries)}; split it."
            )
        if not isinstance(self.name, str) or len(self.name) > MAX_NAME_CHARS:
            raise LexiconError(f"A lexicon name is a string of at most {MAX_NAME_CHARS} characters.")
        inner = sum(1 for e in self.entries if not e.whole_word)
        if inner > MAX_INNER_ENTRIES:
            raise LexiconError(
                f"At most {MAX_INNER_ENTRIES} entries may match inside words (whole_word false), not {inner}."
            )
        self._trie: dict | None = None
        self._inner: dict[tuple[bool, str], LexiconEntry] = {}
        self._inner_pattern: re.Pattern[str] | None = None

    # -- identity -------------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """A digest of the entries (16 hex digits): equal lexicons have equal versions."""
        return _digest(e.canonical() for e in self.entries) if self.entries else "empty"

    def digest_for(self, text: str) -> str:
        """Digest of the entries that ``text`` contains, in order of use; ``""`` when it contains none."""
        seen: dict[str, None] = {}
        for m in self.matches(text):
            seen.setdefault(m.entry.canonical(), None)
        return _digest(seen) if seen else ""

    # -- matching -------------------------------------------------------------------------------

    def _build(self) -> None:
        """The word trie of whole-word entries and the one pattern of in-word entries."""
        root: dict = {}
        inner: dict[tuple[bool, str], LexiconEntry] = {}
        for entry in self.entries:
            if not entry.whole_word:
                inner[
                    (entry.case_sensitive, entry.grapheme if entry.case_sensitive else entry.grapheme.lower())
                ] = entry
                continue
            node = root
            for key, _raw in _tokens(entry.grapheme):
                node = node.setdefault(key, {})
            ends = node.setdefault(None, [])
            # A later entry with the same grapheme and case rule replaces the earlier one (entries at
            # one node share their folded words, so case-insensitive ones always clash).
            ends[:] = [e for e in ends if not _same_rule(e, entry)]
            # Case-sensitive entries are tried before case-insensitive ones for the same words.
            if entry.case_sensitive:
                ends.insert(0, entry)
            else:
                ends.append(entry)
        self._trie = root
        self._inner = dict(inner)
        self._inner_pattern = _trie_pattern([g for _, g in inner]) if inner else None

    def matches(self, text: str) -> list[Match]:
        """Every entry occurrence, left to right, longest first, never overlapping (linear time).

        Whole-word entries are walked word by word through a trie (at most ``MAX_GRAPHEME_WORDS``
        steps from each word); in-word entries are one compiled alternation of literals.
        """
        if not self.entries or not text:
            return []
        if self._trie is None:
            self._build()
        found: list[Match] = []
        if self._trie:
            found = self._word_matches(text)
        if self._inner_pattern is not None:
            inner = []
            for m in self._inner_pattern.finditer(text):
                # The pattern ignores case; a case-sensitive entry must match its letters exactly.
                entry = self._inner.get((True, m.group(0))) or self._inner.get((False, m.group(0).lower()))
                if entry is not None:
                    inner.append(Match(m.start(), m.end(), entry))
            if found and inner:
                found = _merge(found, inner)
            else:
                found = found or inner
        return found

    def _word_matches(self, text: str) -> list[Match]:
        """Whole-word entries found in ``text`` (longest first, not overlapping)."""
        tokens = [(m.start(2), m.end(), m.group(1) is not None, m.group(2)) for m in _TOKEN.finditer(text)]
        keys = [(" " if spaced else "") + raw.lower() for _, _, spaced, raw in tokens]
        root = self._trie
        out: list[Match] = []
        n = len(tokens)
        i = 0
        while i < n:
            node = root.get(keys[i].lstrip(" "))
            best: tuple[int, LexiconEntry] | None = None
            j = i
            while node is not None:
                j += 1
                for entry in node.get(None, ()):
                    if not entry.case_sensitive or _same_words(entry.grapheme, tokens, i, j):
                        best = (j, entry)
                        break
                if j >= n or j - i >= MAX_GRAPHEME_WORDS:
                    break
                node = node.get(keys[j])
            if best is None:
                i += 1
                continue
            end, entry = best
            out.append(Match(tokens[i][0], tokens[end - 1][1], entry))
            i = end
        return out

    def apply(self, text: str, lang: str = "en-us") -> str:
        """``text`` with each match replaced: phonemes by an override marker, aliases by their words.

        Overrides already in the text (inline markup) are left as they are.
        """
        if OVERRIDE_OPEN in text:
            return "".join(
                piece if piece.startswith(OVERRIDE_OPEN) else self.apply(piece, lang)
                for piece in _MARKERS.split(text)
            )
        found = self.matches(text)
        if not found:
            return text
        from engine.normalize import normalize

        parts: list[str] = []
        aliases: dict[str, str] = {}  # each alias is normalised once, however often it is used
        at = 0
        for m in found:
            parts.append(text[at : m.start])
            if m.entry.phonemes is not None:
                parts.append(override(text[m.start : m.end], m.entry.phonemes))
            else:
                alias = m.entry.alias or ""
                if alias not in aliases:
                    aliases[alias] = " ".join(normalize(alias, lang).split())
                parts.append(aliases[alias])
            at = m.end
        parts.append(text[at:])
        return "".join(parts)

    # -- checks ---------------------------------------------------------------------------------

    def validate(self, vocab: Iterable[str]) -> Lexicon:
        """Check every entry's phonemes against Kokoro's vocabulary; the error names the entry too."""
        known = set(vocab)
        for index, entry in enumerate(self.entries):
            if entry.phonemes is None:
                continue
            try:
                check_ipa(entry.phonemes, known, where=f"phonemes of entry {index} ({entry.grapheme!r})")
            except InvalidPhonemesError as exc:
                exc.details["entry"] = index
                exc.details["grapheme"] = entry.grapheme
                raise
        return self

    # -- JSON -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        """JSON form: name, lang, version and entries."""
        return {
            "name": self.name,
            "lang": self.lang,
            "version": self.version,
            "entries": [e.to_dict() for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: object) -> Lexicon:
        """Build from JSON: ``{"name"?, "lang"?, "entries": [...]}`` (a bare list of entries too)."""
        if isinstance(data, list):
            data = {"entries": data}
        if not isinstance(data, Mapping):
            raise LexiconError("A lexicon is an object with an 'entries' list (or a list of entries).")
        entries = data.get("entries")
        if not isinstance(entries, list):
            raise LexiconError("A lexicon needs an 'entries' list of {grapheme, phonemes | alias} objects.")
        if len(entries) > MAX_ENTRIES:
            raise LexiconError(
                f"A lexicon holds at most {MAX_ENTRIES} entries, not {len(entries)}; split it."
            )
        parsed = []
        for index, item in enumerate(entries):
            try:
                parsed.append(LexiconEntry.from_dict(item))
            except LexiconError as exc:
                exc.details["entry"] = index
                raise
        lang = data.get("lang")
        if lang is not None and not isinstance(lang, str):
            raise LexiconError("A lexicon's 'lang' is a language code such as 'en-us'.")
        return cls(parsed, name=data.get("name") or "", lang=lang)  # type: ignore[arg-type]

    # -- W3C PLS --------------------------------------------------------------------------------

    @classmethod
    def from_pls(cls, data: bytes | str, *, name: str = "") -> Lexicon:
        """Read a W3C PLS 1.0 document (IPA phonemes and aliases); entity declarations are refused."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if len(raw) > MAX_PLS_BYTES:
            raise LexiconError(f"The PLS file is {len(raw)} bytes; at most {MAX_PLS_BYTES} are accepted.")
        upper = raw.upper()
        if b"<!DOCTYPE" in upper or b"<!ENTITY" in upper:
            raise LexiconError(
                "The PLS file declares a DOCTYPE or entities, which Spool does not read; remove them."
            )
        parser = ElementTree.XMLParser()
        expat = getattr(parser, "parser", None)
        if expat is not None:  # second guard, whatever the encoding of the declaration

            def refuse(*_args: object) -> None:
                raise LexiconError("The PLS file declares entities, which Spool does not expand.")

            expat.EntityDeclHandler = refuse
            expat.StartDoctypeDeclHandler = refuse
        try:
            parser.feed(raw)
            root = parser.close()
        except ElementTree.ParseError as exc:
            line, column = exc.position
            raise LexiconError(
                f"The PLS file is not well-formed XML at line {line}, column {column + 1} ({exc}).",
                line=line,
                column=column + 1,
            ) from None
        if _local(root.tag) != "lexicon":
            raise LexiconError(f"A PLS document's root is <lexicon>, not <{_local(root.tag)}>.")
        alphabet = (root.get("alphabet") or "ipa").lower()
        lang = root.get("{http://www.w3.org/XML/1998/namespace}lang")
        entries: list[LexiconEntry] = []
        for number, lexeme in enumerate(e for e in root if _local(e.tag) == "lexeme"):
            graphemes = [(g.text or "").strip() for g in lexeme if _local(g.tag) == "grapheme"]
            phonemes = [
                p
                for p in lexeme
                if _local(p.tag) == "phoneme" and (p.get("alphabet") or alphabet).lower() == "ipa"
            ]
            others = [p for p in lexeme if _local(p.tag) == "phoneme" and p not in phonemes]
            aliases = [(a.text or "").strip() for a in lexeme if _local(a.tag) == "alias"]
            if not graphemes:
                raise LexiconError(
                    f"Lexeme {number + 1} of the PLS file has no <grapheme>.", lexeme=number + 1
                )
            if not phonemes and not aliases:
                what = " (only non-IPA alphabets, which Spool cannot read)" if others else ""
                raise LexiconError(
                    f"Lexeme {number + 1} ({graphemes[0]!r}) has no IPA <phoneme> or <alias>{what}.",
                    lexeme=number + 1,
                )
            flags = {
                "case_sensitive": _flag(lexeme, "case-sensitive", False),
                "whole_word": _flag(lexeme, "whole-word", True),
            }
            for grapheme in graphemes:
                if phonemes:
                    entries.append(LexiconEntry(grapheme, phonemes=(phonemes[0].text or "").strip(), **flags))
                else:
                    entries.append(LexiconEntry(grapheme, alias=aliases[0], **flags))
        return cls(entries, name=name, lang=lang)

    def to_pls(self) -> bytes:
        """This lexicon as a W3C PLS 1.0 document (UTF-8); ``from_pls`` reads it back unchanged."""
        ElementTree.register_namespace("", PLS_NAMESPACE)
        ElementTree.register_namespace("spool", SPOOL_PLS_NAMESPACE)
        ns, sp = "{" + PLS_NAMESPACE + "}", "{" + SPOOL_PLS_NAMESPACE + "}"
        root = ElementTree.Element(ns + "lexicon", {"version": "1.0", "alphabet": "ipa"})
        root.set("{http://www.w3.org/XML/1998/namespace}lang", self.lang or "en-US")
        for entry in self.entries:
            attrs = {}
            if entry.case_sensitive:
                attrs[sp + "case-sensitive"] = "true"
            if not entry.whole_word:
                attrs[sp + "whole-word"] = "false"
            lexeme = ElementTree.SubElement(root, ns + "lexeme", attrs)
            ElementTree.SubElement(lexeme, ns + "grapheme").text = entry.grapheme
            if entry.phonemes is not None:
                ElementTree.SubElement(lexeme, ns + "phoneme").text = entry.phonemes
            else:
                ElementTree.SubElement(lexeme, ns + "alias").text = entry.alias
        return (
            b'<?xml version="1.0" encoding="UTF-8"?>\n'
            + ElementTree.tostring(root, encoding="utf-8").split(b"?>", 1)[-1].lstrip()
        )


def _flag(lexeme: ElementTree.Element, name: str, default: bool) -> bool:
    """A Spool entry flag on a PLS ``<lexeme>`` (``spool:case-sensitive="true"``), else ``default``."""
    value = lexeme.get("{" + SPOOL_PLS_NAMESPACE + "}" + name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise LexiconError(f"spool:{name} is 'true' or 'false', not {value!r}.")
    return value.lower() == "true"


def _same_rule(a: LexiconEntry, b: LexiconEntry) -> bool:
    """True when ``b`` would match wherever ``a`` does (same folded letters assumed): ``b`` replaces ``a``."""
    if a.case_sensitive != b.case_sensitive or a.whole_word != b.whole_word:
        return False
    return not a.case_sensitive or a.grapheme == b.grapheme


def _local(tag: object) -> str:
    """An XML tag's name without its namespace."""
    return str(tag).rsplit("}", 1)[-1]


def _digest(parts: Iterable[str]) -> str:
    """16 hex digits of SHA-256 over the parts, each length-prefixed."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(4, "big"))
        h.update(data)
    return h.hexdigest()[:16]
