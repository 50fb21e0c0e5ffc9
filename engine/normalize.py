"""Written text to speakable words: numbers, money, dates, times, units, abbreviations and links.

English gets the full treatment because misaki reads raw digits and symbols
inconsistently (stray ``:`` in ``10:30am``, cents as decimals). Other languages
only get whitespace and symbol cleanup: espeak reads digits in its own language,
and an English number reading would be wrong there. ``normalize`` never raises
on odd input: whatever it cannot read is left for the G2P stage or becomes a space.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from num2words import num2words

__all__ = ["bound_spans", "is_english", "is_british", "normalize"]

Match = re.Match[str]

# --------------------------------------------------------------------------- language


def _lang_key(lang: str | None) -> str:
    """Lower-case a language code and use hyphens (``en_US`` -> ``en-us``)."""
    return (lang or "en-us").strip().lower().replace("_", "-")


def is_english(lang: str | None) -> bool:
    """Return True when ``lang`` names English (``en``, ``en-us``, ``en-gb``, Kokoro's ``a``/``b``)."""
    key = _lang_key(lang)
    return key in ("a", "b") or key == "en" or key.startswith("en-")


def is_british(lang: str | None) -> bool:
    """Return True when ``lang`` names British English (day-first dates, "and" in numbers)."""
    key = _lang_key(lang)
    return key in ("b", "en-gb", "en-uk")


# --------------------------------------------------------------------------- number words

#: Digit strings longer than this are read digit by digit (ids, account numbers).
_MAX_CARDINAL_DIGITS = 9

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def _digits(digits: str) -> str:
    """Read a digit string one digit at a time."""
    return " ".join(_DIGIT_WORDS[unicodedata.decimal(d)] for d in digits if d.isdecimal())


def _clean_words(words: str, british: bool) -> str:
    """Drop num2words' commas (they would become pauses) and, for US English, its "and"."""
    words = words.replace(",", "")
    if not british:
        words = words.replace(" and ", " ")
    return " ".join(words.split())


def _cardinal(n: int, british: bool = False) -> str:
    """Return the cardinal words of an integer ("one hundred twenty-three")."""
    if n < 0:
        return "minus " + _cardinal(-n, british)
    if len(str(n)) > 15:
        return _digits(str(n))
    try:
        return _clean_words(num2words(n, lang="en"), british)
    except (OverflowError, ValueError, NotImplementedError):
        return _digits(str(n))


def _ordinal(n: int, british: bool = False) -> str:
    """Return the ordinal words of an integer ("twenty-second")."""
    if len(str(n)) > 15:
        return _digits(str(n))
    try:
        return _clean_words(num2words(n, lang="en", to="ordinal"), british)
    except (OverflowError, ValueError, NotImplementedError):
        return _digits(str(n))


def _year(n: int, british: bool = False) -> str:
    """Read a year the way people say it: 1990 "nineteen ninety", 2005 "two thousand five"."""
    if n < 1000 or n > 9999:
        return _cardinal(n, british)
    high, low = divmod(n, 100)
    if 2000 <= n <= 2009 or (n % 1000 < 10 and n % 1000 != 0 and high % 10 == 0):
        return _cardinal(n, british)
    if low == 0:
        if n % 1000 == 0:
            return _cardinal(n, british)
        return f"{_cardinal(high)} hundred"
    if low < 10:
        return f"{_cardinal(high)} oh {_cardinal(low)}"
    return f"{_cardinal(high)} {_cardinal(low)}"


def _pluralize_last(words: str) -> str:
    """Make the last word plural ("nineteen ninety" -> "nineteen nineties")."""
    head, _, last = words.rpartition(" ")
    if "-" in last:
        stem, _, tail = last.rpartition("-")
        return (head + " " if head else "") + stem + "-" + _pluralize_last(tail)
    if last.endswith("y"):
        last = last[:-1] + "ies"
    elif last.endswith("x"):
        last += "es"
    else:
        last += "s"
    return (head + " " if head else "") + last


def _int_text(text: str, british: bool) -> str:
    """Read an integer string, with thousands commas, leading zeros or too many digits handled."""
    plain = text.replace(",", "")
    if not plain:
        return text
    if len(plain) > 1 and plain[0] == "0":
        return _digits(plain)
    if len(plain) > _MAX_CARDINAL_DIGITS and "," not in text:
        return _digits(plain)
    return _cardinal(int(plain), british)


def _number_text(text: str, british: bool) -> str:
    """Read a number string such as ``-1,234.56`` ("minus one thousand ... point five six")."""
    sign = ""
    if text[:1] in "-−":
        sign, text = "minus ", text[1:]
    whole, dot, frac = text.partition(".")
    words = _int_text(whole, british) if whole else "zero"
    if dot and frac:
        words += " point " + _digits(frac)
    return sign + words


# Number: thousands groups or a plain digit run, optional decimals. The look-arounds keep
# it from matching inside longer digit strings or version numbers. At most six groups
# (999 quintillion): a pattern may start again after every comma of a long run, so an
# unbounded group count made a failing "1,000,000,..." quadratic; longer runs are read
# digit by digit anyway (_MAX_CARDINAL_DIGITS).
_THOUSANDS = r"\d{1,3}(?:,\d{3}){1,6}"
_NUM = rf"(?:{_THOUSANDS}|\d+)(?:\.\d+)?"

# --------------------------------------------------------------------------- tables

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_BY_NAME: dict[str, int] = {}
for _i, _m in enumerate(_MONTHS, start=1):
    _MONTH_BY_NAME[_m.lower()] = _i
    _MONTH_BY_NAME[_m[:3].lower()] = _i
_MONTH_BY_NAME["sept"] = 9
# Capitalised only: "may" and "march" are also verbs.
_MONTH_RE = (
    r"(?:January|February|March|April|May|June|July|August|September|October|November|December"
    r"|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.?"
)

_CURRENCY_WORDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "€": ("euro", "euros", "cent", "cents"),
    "¥": ("yen", "yen", None, None),
    "₹": ("rupee", "rupees", "paisa", "paise"),
    "₩": ("won", "won", None, None),
    "₽": ("ruble", "rubles", "kopek", "kopeks"),
    "USD": ("US dollar", "US dollars", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
    "JPY": ("yen", "yen", None, None),
}
_CURRENCY_SYMBOLS = "$£€¥₹₩₽"

_MAGNITUDES = {
    "k": "thousand",
    "K": "thousand",
    "thousand": "thousand",
    "m": "million",
    "M": "million",
    "mn": "million",
    "mil": "million",
    "million": "million",
    "b": "billion",
    "B": "billion",
    "bn": "billion",
    "billion": "billion",
    "t": "trillion",
    "T": "trillion",
    "tn": "trillion",
    "trillion": "trillion",
}
# Spelled-out magnitudes may follow a space; letter abbreviations must touch the number.
_MAGNITUDE_RE = r"(?:\s?(?:thousand|million|billion|trillion)|(?:mil|mn|bn|tn|[kKmMbBtT]))"

# unit -> (singular, plural); case matters ("mA" milliamp, "MB" megabyte).
_UNITS: dict[str, tuple[str, str]] = {
    "km": ("kilometer", "kilometers"),
    "m": ("meter", "meters"),
    "cm": ("centimeter", "centimeters"),
    "mm": ("millimeter", "millimeters"),
    "µm": ("micrometer", "micrometers"),
    "μm": ("micrometer", "micrometers"),
    "nm": ("nanometer", "nanometers"),
    "mi": ("mile", "miles"),
    "ft": ("foot", "feet"),
    "yd": ("yard", "yards"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mg": ("milligram", "milligrams"),
    "µg": ("microgram", "micrograms"),
    "μg": ("microgram", "micrograms"),
    "lb": ("pound", "pounds"),
    "lbs": ("pound", "pounds"),
    "oz": ("ounce", "ounces"),
    "l": ("liter", "liters"),
    "L": ("liter", "liters"),
    "ml": ("milliliter", "milliliters"),
    "mL": ("milliliter", "milliliters"),
    "cl": ("centiliter", "centiliters"),
    "gal": ("gallon", "gallons"),
    "mph": ("mile per hour", "miles per hour"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "kph": ("kilometer per hour", "kilometers per hour"),
    "kmh": ("kilometer per hour", "kilometers per hour"),
    "m/s": ("meter per second", "meters per second"),
    "mpg": ("mile per gallon", "miles per gallon"),
    "Hz": ("hertz", "hertz"),
    "kHz": ("kilohertz", "kilohertz"),
    "MHz": ("megahertz", "megahertz"),
    "GHz": ("gigahertz", "gigahertz"),
    "KB": ("kilobyte", "kilobytes"),
    "kB": ("kilobyte", "kilobytes"),
    "MB": ("megabyte", "megabytes"),
    "GB": ("gigabyte", "gigabytes"),
    "TB": ("terabyte", "terabytes"),
    "PB": ("petabyte", "petabytes"),
    "kbps": ("kilobit per second", "kilobits per second"),
    "Kbps": ("kilobit per second", "kilobits per second"),
    "Mbps": ("megabit per second", "megabits per second"),
    "Gbps": ("gigabit per second", "gigabits per second"),
    "ms": ("millisecond", "milliseconds"),
    "µs": ("microsecond", "microseconds"),
    "μs": ("microsecond", "microseconds"),
    "ns": ("nanosecond", "nanoseconds"),
    "sec": ("second", "seconds"),
    "secs": ("second", "seconds"),
    "min": ("minute", "minutes"),
    "mins": ("minute", "minutes"),
    "hr": ("hour", "hours"),
    "hrs": ("hour", "hours"),
    "W": ("watt", "watts"),
    "kW": ("kilowatt", "kilowatts"),
    "MW": ("megawatt", "megawatts"),
    "GW": ("gigawatt", "gigawatts"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "V": ("volt", "volts"),
    "mV": ("millivolt", "millivolts"),
    "kV": ("kilovolt", "kilovolts"),
    "mA": ("milliamp", "milliamps"),
    "mAh": ("milliamp hour", "milliamp hours"),
    "kPa": ("kilopascal", "kilopascals"),
    "psi": ("P S I", "P S I"),
    "kcal": ("kilocalorie", "kilocalories"),
    "cal": ("calorie", "calories"),
    "dB": ("decibel", "decibels"),
    "px": ("pixel", "pixels"),
    "m2": ("square meter", "square meters"),
    "km2": ("square kilometer", "square kilometers"),
    "cm2": ("square centimeter", "square centimeters"),
    "ft2": ("square foot", "square feet"),
    "m3": ("cubic meter", "cubic meters"),
    "cm3": ("cubic centimeter", "cubic centimeters"),
    "°C": ("degree Celsius", "degrees Celsius"),
    "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
    "°": ("degree", "degrees"),
    "x": ("times", "times"),
    "×": ("times", "times"),
}
_UNIT_RE = "|".join(re.escape(u) for u in sorted(_UNITS, key=len, reverse=True))

# Titles that precede a name (never end a sentence).
_TITLES = {
    "Mr": "Mister",
    "Mrs": "Missus",
    "Ms": "Miz",
    "Mx": "Mix",
    "Dr": "Doctor",
    "Prof": "Professor",
    "Rev": "Reverend",
    "Fr": "Father",
    "Gen": "General",
    "Col": "Colonel",
    "Capt": "Captain",
    "Lt": "Lieutenant",
    "Sgt": "Sergeant",
    "Gov": "Governor",
    "Sen": "Senator",
    "Rep": "Representative",
    "Pres": "President",
    "Hon": "Honorable",
    "St": "Saint",
    "Mt": "Mount",
    "Ft": "Fort",
}
# The same abbreviation after a street name: "Elm St." is a street, "St. Paul" a saint.
_STREET_SUFFIXES = {"St": "Street", "Dr": "Drive", "Ave": "Avenue", "Blvd": "Boulevard", "Rd": "Road"}

# Abbreviations with their trailing dot; matched case-insensitively, capital kept.
_ABBREVIATIONS = {
    "etc.": "et cetera",
    "e.g.": "for example",
    "i.e.": "that is",
    "vs.": "versus",
    "vs": "versus",
    "approx.": "approximately",
    "a.k.a.": "also known as",
    "cf.": "compare",
    "incl.": "including",
    "excl.": "excluding",
    "viz.": "namely",
    "jr.": "Junior",
    "sr.": "Senior",
    "inc.": "Incorporated",
    "ltd.": "Limited",
    "corp.": "Corporation",
    "dept.": "department",
    "est.": "established",
    "fig.": "figure",
    "vol.": "volume",
    "ch.": "chapter",
    "ave.": "Avenue",
    "blvd.": "Boulevard",
}
_ABBREVIATION_RE = "|".join(re.escape(a) for a in sorted(_ABBREVIATIONS, key=len, reverse=True))

_ROMAN_CARDINAL_CONTEXT = (
    "Chapter|CHAPTER|Part|PART|Book|BOOK|Volume|VOLUME|Act|ACT|Scene|SCENE|Section|SECTION|"
    "Article|Appendix|War|Phase|Stage|Type|Class|Level|Round|Episode|Season|Canto|Psalm|Title"
)
_ROMAN_REGNAL_CONTEXT = (
    "King|Queen|Pope|Emperor|Empress|Tsar|Czar|Kaiser|Louis|Henry|Edward|George|William|Charles|"
    "Richard|James|Elizabeth|Mary|John|Pius|Leo|Benedict|Gregory|Innocent|Clement|Alexander|"
    "Frederick|Philip|Ferdinand|Peter|Catherine|Ramesses|Napoleon|Francis|Paul|Victor|Edmund|Harold"
)
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100, "D": 500, "M": 1000}
_ROMAN_VALID = re.compile(r"M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})")

_VULGAR_FRACTIONS = {
    "½": "1/2",
    "⅓": "1/3",
    "⅔": "2/3",
    "¼": "1/4",
    "¾": "3/4",
    "⅕": "1/5",
    "⅖": "2/5",
    "⅗": "3/5",
    "⅘": "4/5",
    "⅙": "1/6",
    "⅚": "5/6",
    "⅛": "1/8",
    "⅜": "3/8",
    "⅝": "5/8",
    "⅞": "7/8",
}
_FRACTION_NAMES = {2: ("half", "halves"), 4: ("quarter", "quarters")}

# Numbers said digit by digit even though they are short.
_DIGIT_BY_DIGIT = frozenset({"911", "999", "112"})

# Words before a four-digit number that make it a year ("in 1990", "since 2005").
_YEAR_CONTEXT = frozenset(
    "in since by from of year years until till to through around circa c ca early late mid before "
    "after during summer winter spring autumn fall between and or the".split()
    + [m.lower() for m in _MONTHS]
    + [m[:3].lower() for m in _MONTHS]
)
_ERA_RE = r"(?:AD|BC|BCE|CE|A\.D\.|B\.C\.|B\.C\.E\.|C\.E\.)"
# What follows a number or a regnal "I", matched in place with .match(text, pos).
_ERA_AFTER = re.compile(r"\s*" + _ERA_RE)
_WORD_AFTER = re.compile(r"\s*[A-Za-z]")
_ALNUM_AFTER = re.compile(r"\s*\w")

# Characters that never reach the G2P: zero-width joiners, variation selectors, BOM, tag
# characters. Category-based removal below catches emoji and the rest.
_INVISIBLE = re.compile("[\u200b-\u200f\u2060-\u2064\ufeff\ufe00-\ufe0f\U000e0000-\U000e007f]")


def _punctuation_class() -> str:
    """Regex class of every BMP punctuation or symbol character (marks excluded, unlike ``[^\\w\\s]``)."""
    ranges: list[tuple[int, int]] = []
    for code in range(0x10000):
        if unicodedata.category(chr(code))[0] in "PS" and chr(code) != "_":
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1] = (ranges[-1][0], code)
            else:
                ranges.append((code, code))
    parts = [re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges]
    return "[" + "".join(parts) + "]"


_P = _punctuation_class()
# A punctuation-only token followed by more of them ("! ! !", ". . .") collapses to the first.
_PUNCT_TOKEN_RUN = re.compile(rf"(?<!\S)({_P}+)(?:\s+{_P}+)+(?!\S)")
_PUNCT_RUN = re.compile(rf"{_P}{{4,}}")
_SAME_PUNCT_RUN = re.compile(rf"({_P})\1{{2,}}")
# Starts only where a whitespace run starts: a match attempt from inside a long run would
# rescan it (quadratic); the run's first position already tries the longest match.
_SPACE_BEFORE_PUNCT = re.compile(r"(?<!\s)\s+([,.;:!?…)\]}»”])")
_WS = re.compile(r"\s+")

# --------------------------------------------------------------------------- clean-up


def _nfkc(text: str) -> str:
    """Apply NFKC per character, except where it would blow one character up into many."""
    if text.isascii():
        return text
    out = []
    for ch in text:
        if ch.isascii():
            out.append(ch)
            continue
        if ch in _VULGAR_FRACTIONS:
            out.append(" " + _VULGAR_FRACTIONS[ch] + " ")
            continue
        folded = unicodedata.normalize("NFKC", ch)
        # "…" folds to "..." which the later pass turns back; long ligatures (﷽) stay whole
        # so one character can never outgrow a segment's phoneme budget.
        out.append(folded if len(folded) <= 3 else ch)
    return "".join(out)


def _is_unspeakable_char(ch: str, english: bool) -> bool:
    """Return True for emoji, pictographs, control and private-use characters."""
    cat = unicodedata.category(ch)
    if cat[0] == "C":
        return not ch.isspace()
    if cat in ("So", "Sk"):
        return ch != "°"
    if english and cat == "Sm":
        return ch not in "+=<>±×÷~|−"
    return False


def _drop_unspeakable(text: str, english: bool) -> str:
    """Turn emoji and other unspeakable symbols into spaces."""
    text = _INVISIBLE.sub("", text)
    if text.isascii():
        # Only controls can be unspeakable in ASCII.
        return "".join(" " if (ord(c) < 32 and not c.isspace()) or ord(c) == 127 else c for c in text)
    return "".join(" " if _is_unspeakable_char(c, english) else c for c in text)


def _collapse_punctuation(text: str) -> str:
    """Shorten runs of punctuation ("!!!!" -> "!", "..." -> "…", "! ! !" -> "!")."""
    text = text.replace("...", "…")
    text = _SAME_PUNCT_RUN.sub(lambda m: "…" if m.group(1) == "." else m.group(1), text)
    text = _PUNCT_TOKEN_RUN.sub(lambda m: m.group(1), text)

    def shorten(m: Match) -> str:
        seen: list[str] = []
        for ch in m.group(0):
            if ch not in seen:
                seen.append(ch)
        return "".join(seen[:3])

    return _PUNCT_RUN.sub(shorten, text)


def _finish(text: str) -> str:
    """Collapse whitespace and pull punctuation onto the word before it."""
    text = _WS.sub(" ", text).strip()
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    return text


# --------------------------------------------------------------------------- English passes


def _padded(m: Match, words: str) -> str:
    """Put spaces around ``words`` only where the match touches a letter or digit ("mp3" -> "mp three")."""
    text = m.string
    left = " " if m.start() > 0 and text[m.start() - 1].isalnum() else ""
    right = " " if m.end() < len(text) and text[m.end()].isalnum() else ""
    return left + words + right


_TEXT_END = re.compile("[ \t\n\r\"'”’»)\\]]*")


def _at_text_end(m: Match) -> bool:
    """Return True when only whitespace and closing quotes follow the match."""
    # Matched in place: slicing off the rest of the text per match was quadratic.
    return _TEXT_END.match(m.string, m.end()).end() == len(m.string)


def _keep_final_dot(m: Match, words: str) -> str:
    """Keep a consumed abbreviation dot when it also ended the sentence."""
    if m.group(0).endswith(".") and _at_text_end(m):
        return words + "."
    return words


class _Passes:
    """The English rewrite passes, in order; one instance per call holds the dialect flags."""

    def __init__(self, british: bool) -> None:
        self.british = british

    # -- helpers

    def num(self, text: str) -> str:
        """Read a number string in this dialect."""
        return _number_text(text, self.british)

    def card(self, n: int) -> str:
        """Cardinal in this dialect."""
        return _cardinal(n, self.british)

    # -- links

    def markdown_link(self, m: Match) -> str:
        """``[text](url)`` reads as its text (misaki would take it for a pronunciation override)."""
        return m.group(0) if m.group(1) is None else m.group(1)

    def _spell_link(self, text: str) -> str:
        """Read a host, path or mailbox: dots, slashes and the like as words, digits as numbers."""
        names = {
            ".": " dot ",
            "/": " slash ",
            "-": " dash ",
            "_": " underscore ",
            "@": " at ",
            ":": " colon ",
            "?": " question mark ",
            "=": " equals ",
            "&": " and ",
            "#": " hash ",
            "~": " tilde ",
            "%": " percent ",
            "+": " plus ",
        }
        out = []
        for part in re.split(r"(\d+)", text):
            if part.isdigit():
                out.append(" " + (_int_text(part, self.british) if len(part) <= 4 else _digits(part)) + " ")
            else:
                out.append("".join(names.get(c, c) for c in part))
        return " ".join("".join(out).split())

    def email(self, m: Match) -> str:
        """``a.b@example.com`` -> "a dot b at example dot com"."""
        return _padded(m, self._spell_link(m.group(0)))

    def url(self, m: Match) -> str:
        """``https://example.com/path`` -> "example dot com slash path"."""
        url = m.group(0)
        if m.group("skip") is not None:
            return url
        trail = ""
        while url and url[-1] in ".,;:!?)]}'\"":
            trail = url[-1] + trail
            url = url[:-1]
        url = re.sub(r"^(?:https?|ftp)://", "", url, flags=re.I)
        url = re.sub(r"^www\.", "", url, flags=re.I)
        url = url.rstrip("/")
        return " " + self._spell_link(url) + " " + trail

    def phone(self, m: Match) -> str:
        """Phone numbers are read digit by digit in their groups."""
        groups = re.findall(r"\d+", m.group(0))
        prefix = "plus " if m.group(0).lstrip().startswith("+") else ""
        return prefix + ", ".join(_digits(g) for g in groups)

    # -- money

    def _currency_names(self, symbol: str) -> tuple[str, str, str | None, str | None]:
        return _CURRENCY_WORDS.get(symbol, _CURRENCY_WORDS["$"])

    def money_magnitude(self, m: Match) -> str:
        """``$2.5M`` -> "two point five million dollars"."""
        sign, symbol, amount, magnitude = m.group("sign"), m.group("cur"), m.group("amt"), m.group("mag")
        plural = self._currency_names(symbol)[1]
        words = f"{self.num(amount)} {_MAGNITUDES[magnitude.strip()]} {plural}"
        return ("minus " if sign else "") + words

    def _money(self, sign: str | None, symbol: str, amount: str) -> str:
        """Read an amount of money: "three dollars and fifty cents"."""
        one, many, sub_one, sub_many = self._currency_names(symbol)
        whole, _, frac = amount.partition(".")
        whole_n = int(whole.replace(",", "") or "0")
        prefix = "minus " if sign else ""
        if frac and (len(frac) > 2 or sub_one is None):
            return f"{prefix}{self.num(amount)} {many}"
        cents = int(frac.ljust(2, "0")) if frac else 0
        parts = []
        if whole_n or not cents:
            parts.append(
                f"{_int_text(whole, self.british) if whole else 'zero'} {one if whole_n == 1 else many}"
            )
        if cents:
            parts.append(f"{self.card(cents)} {sub_one if cents == 1 else sub_many}")
        return prefix + " and ".join(parts)

    def money_prefix(self, m: Match) -> str:
        """``$3.50`` -> "three dollars and fifty cents"."""
        return self._money(m.group("sign"), m.group("cur"), m.group("amt"))

    def money_suffix(self, m: Match) -> str:
        """``5€`` / ``100 USD`` -> "five euros" / "one hundred US dollars"."""
        return self._money(m.group("sign"), m.group("cur"), m.group("amt"))

    def cents(self, m: Match) -> str:
        """``50¢`` -> "fifty cents"."""
        n = int(m.group(1))
        return f"{self.card(n)} {'cent' if n == 1 else 'cents'}"

    # -- dates and times

    def _date(self, year: int | None, month: int, day: int | None, day_first: bool) -> str:
        month_name = _MONTHS[month - 1]
        if day is None:
            text = month_name
        elif day_first:
            text = f"the {_ordinal(day)} of {month_name}"
        else:
            text = f"{month_name} {_ordinal(day)}"
        if year is not None:
            text += f", {_year(year, self.british)}" if day is not None else f" {_year(year, self.british)}"
        return text

    def iso_date(self, m: Match) -> str:
        """``2024-01-15`` -> "January fifteenth, twenty twenty-four"."""
        year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return m.group(0)
        return self._date(year, month, day, self.british)

    def numeric_date(self, m: Match) -> str:
        """``01/15/2024`` (US) or ``15/01/2024`` (UK); an impossible month decides for itself."""
        a, b, sep, y = int(m.group(1)), int(m.group(3)), m.group(2), m.group(4)
        day_first = self.british or sep == "."
        if day_first and b > 12 >= a:
            day_first = False
        elif not day_first and a > 12 >= b:
            day_first = True
        day, month = (a, b) if day_first else (b, a)
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return m.group(0)
        year = int(y)
        if len(y) == 2:
            year += 2000 if year < 50 else 1900
        return self._date(year, month, day, day_first)

    def month_day(self, m: Match) -> str:
        """``January 5, 2024`` / ``Jan. 5th`` -> "January fifth, twenty twenty-four"."""
        month = _MONTH_BY_NAME[m.group("mon").rstrip(".").lower()]
        day = int(m.group("day"))
        if not 1 <= day <= 31:
            return m.group(0)
        year = int(m.group("year")) if m.group("year") else None
        return self._date(year, month, day, False)

    def day_month(self, m: Match) -> str:
        """``5 January 2024`` / ``the 5th of Jan`` -> "the fifth of January, twenty twenty-four"."""
        month = _MONTH_BY_NAME[m.group("mon").rstrip(".").lower()]
        day = int(m.group("day"))
        if not 1 <= day <= 31:
            return m.group(0)
        year = int(m.group("year")) if m.group("year") else None
        return self._date(year, month, day, True)

    def month_year(self, m: Match) -> str:
        """``Jan. 2024`` / ``March 1999`` -> "January twenty twenty-four"."""
        month = _MONTH_BY_NAME[m.group("mon").rstrip(".").lower()]
        return self._date(int(m.group("year")), month, None, False)

    def _clock(self, hour: int, minute: int, second: int | None, meridiem: str | None) -> str:
        words = self.card(hour)
        if meridiem:
            if minute:
                words += f" oh {self.card(minute)}" if minute < 10 else f" {self.card(minute)}"
            if second:
                words += f" and {self.card(second)} {'second' if second == 1 else 'seconds'}"
            return words + (" AM" if meridiem.lower().startswith("a") else " PM")
        elif minute == 0:
            if hour == 0:
                words = "midnight"
            elif hour <= 12:
                words += " o'clock"
            else:
                words += " hundred"
        else:
            if hour == 0:
                words = "zero"
            words += f" oh {self.card(minute)}" if minute < 10 else f" {self.card(minute)}"
        if second:
            words += f" and {self.card(second)} {'second' if second == 1 else 'seconds'}"
        return words

    def clock_time(self, m: Match) -> str:
        """``10:30am`` -> "ten thirty AM"; ``14:05`` -> "fourteen oh five"."""
        hour, minute = int(m.group("h")), int(m.group("m"))
        second = int(m.group("s")) if m.group("s") else None
        meridiem = m.group("ampm")
        if meridiem and hour > 12:
            meridiem = None
        return _keep_final_dot(m, self._clock(hour, minute, second, meridiem))

    def hour_meridiem(self, m: Match) -> str:
        """``9pm`` / ``9 p.m.`` -> "nine PM"."""
        return _keep_final_dot(m, self._clock(int(m.group("h")), 0, None, m.group("ampm")))

    # -- quantities

    def percent(self, m: Match) -> str:
        """``45%`` -> "forty-five percent"."""
        return f"{self.num(m.group(1))} percent"

    def feet_inches(self, m: Match) -> str:
        """``5'10"`` -> "five feet ten inches"."""
        feet, inches = int(m.group(1)), int(m.group(2))
        return (
            f"{self.card(feet)} {'foot' if feet == 1 else 'feet'} "
            f"{self.card(inches)} {'inch' if inches == 1 else 'inches'}"
        )

    def unit(self, m: Match) -> str:
        """``5 km`` -> "five kilometers"; ``72°F`` -> "seventy-two degrees Fahrenheit"."""
        amount, unit = m.group("amt"), m.group("unit")
        one, many = _UNITS[unit]
        singular = amount.lstrip("-−") == "1"
        return f"{self.num(amount)} {one if singular else many}"

    def _fraction(self, num: int, den: int) -> str | None:
        if den in _FRACTION_NAMES:
            one, many = _FRACTION_NAMES[den]
        elif 3 <= den <= 10 or den in (12, 16, 32, 64, 100):
            one = _ordinal(den)
            many = one + "s"
        else:
            return None
        return f"{self.card(num)} {one if num == 1 else many}"

    def mixed_fraction(self, m: Match) -> str:
        """``1 1/2`` -> "one and a half"."""
        whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
        frac = self._fraction(num, den)
        if frac is None or num >= den:
            return m.group(0)
        if num == 1:
            frac = "a " + frac.split(" ", 1)[1]
        return f"{self.card(whole)} and {frac}"

    def rating(self, m: Match) -> str:
        """``7.5/10`` -> "seven point five out of ten"."""
        return f"{self.num(m.group(1))} out of {self.num(m.group(2))}"

    def money_range(self, m: Match) -> str:
        """``$5-10`` -> "five to ten dollars"."""
        plural = self._currency_names(m.group("cur"))[1]
        return f"{self.num(m.group('a'))} to {self.num(m.group('b'))} {plural}"

    def sharp(self, m: Match) -> str:
        """``C#`` -> "C sharp"."""
        return f"{m.group(1)} sharp"

    def meridiem_range(self, m: Match) -> str:
        """The dash of ``9am-5pm`` reads "to"."""
        return " to "

    def spaced_thousands(self, m: Match) -> str:
        """``1 000 000`` -> the digits without their group spaces."""
        return m.group(0).replace(" ", "")

    def fraction(self, m: Match) -> str:
        """``3/4`` -> "three quarters"; ``24/7`` -> "twenty-four seven"."""
        num, den = int(m.group(1)), int(m.group(2))
        # Improper fractions other than halves and quarters are idioms or scores ("24/7", "50/50").
        frac = self._fraction(num, den) if num < den or (den in (2, 4) and num < 100) else None
        if frac is None:
            return f"{_int_text(m.group(1), self.british)} {_int_text(m.group(2), self.british)}"
        return frac

    def decade(self, m: Match) -> str:
        """``1990s`` -> "nineteen nineties"."""
        return _pluralize_last(_year(int(m.group(1)), self.british))

    def short_decade(self, m: Match) -> str:
        """``'90s`` / ``90s`` -> "nineties"."""
        tens = int(m.group(1))
        if tens == 0:
            return "two thousands"
        return _pluralize_last(self.card(tens * 10))

    def ordinal(self, m: Match) -> str:
        """``22nd`` -> "twenty-second"."""
        return _ordinal(int(m.group(1).replace(",", "")), self.british)

    def number_sign(self, m: Match) -> str:
        """``No. 5`` / ``#5`` -> "number five"."""
        return "number "

    def pages(self, m: Match) -> str:
        """``p. 5`` -> "page five"; ``pp. 5`` -> "pages five"."""
        return "pages " if m.group(1).lower() == "pp" else "page "

    def number_range(self, m: Match) -> str:
        """``10-20`` -> "10 to 20" (later passes read the numbers and any unit); years read as years."""
        a, b = m.group(1), m.group(2)
        if all(len(x) == 4 and 1000 <= int(x) <= 2099 for x in (a, b)):
            return f"{_year(int(a), self.british)} to {_year(int(b), self.british)}"
        return f"{a} to {b}"

    def magnitude_number(self, m: Match) -> str:
        """``2.5M`` / ``10k`` -> "two point five million" / "ten thousand"."""
        return f"{self.num(m.group(1))} {_MAGNITUDES[m.group(2)]}"

    def number(self, m: Match) -> str:
        """Any remaining number; four digits in a year context read as a year."""
        sign, body = m.group("sign") or "", m.group("num")
        text = m.string
        if not sign and len(body) == 4 and body.isdigit() and 1000 <= int(body) <= 2099:
            before = text[max(0, m.start() - 40) : m.start()].rstrip()
            prev = re.findall(r"[A-Za-z]+\.?$", before)
            prev_word = prev[0].rstrip(".").lower() if prev else ""
            # Matched in place: slicing off the rest of the text per number was quadratic.
            era = _ERA_AFTER.match(text, m.end())
            next_is_word = _WORD_AFTER.match(text, m.end()) is not None
            sentence_start = not before or before[-1] in ".!?…\n"
            if prev_word in _YEAR_CONTEXT or era or not next_is_word or sentence_start:
                return _padded(m, _year(int(body), self.british))
        if body in _DIGIT_BY_DIGIT:
            return _padded(m, _digits(body))
        return _padded(m, self.num(sign + body))

    def joining_hyphen(self, m: Match) -> str:
        """The hyphen of ``COVID-19`` is no minus sign: a space."""
        return " "

    def leading_decimal(self, m: Match) -> str:
        """``.5`` -> "point five"."""
        return _padded(m, "point " + _digits(m.group(1)))

    def version(self, m: Match) -> str:
        """``1.2.3`` -> "one point two point three"."""
        return _padded(m, " point ".join(_int_text(p, self.british) for p in m.group(0).split(".")))

    # -- words

    def title(self, m: Match) -> str:
        """``Dr. Smith`` -> "Doctor Smith"."""
        return _TITLES[m.group(1) or m.group(2)]

    def street(self, m: Match) -> str:
        """``Elm St.`` -> "Elm Street"."""
        return _keep_final_dot(m, m.group(1) + _STREET_SUFFIXES[m.group(2)])

    def abbreviation(self, m: Match) -> str:
        """``e.g.`` -> "for example"; keeps a capital and a sentence-ending dot."""
        found = m.group(0)
        words = _ABBREVIATIONS[found.lower()]
        if found[0].isupper():
            words = words[0].upper() + words[1:]
        return _keep_final_dot(m, words)

    def dotted_acronym(self, m: Match) -> str:
        """``U.S.`` -> "US" (misaki spells capitals out)."""
        return _keep_final_dot(m, m.group(1).replace(".", "").upper())

    def roman_cardinal(self, m: Match) -> str:
        """``Chapter IV`` -> "Chapter four"."""
        value = _roman_value(m.group(2))
        return m.group(0) if value is None else f"{m.group(1)} {self.card(value)}"

    def roman_regnal(self, m: Match) -> str:
        """``Henry VIII`` -> "Henry the eighth"."""
        if m.group(2) == "I" and _ALNUM_AFTER.match(m.string, m.end()):
            return m.group(0)  # "Henry I know": the pronoun, not the first
        value = _roman_value(m.group(2))
        return m.group(0) if value is None else f"{m.group(1)} the {_ordinal(value)}"

    def month_abbreviation(self, m: Match) -> str:
        """``Jan.`` before a number -> "January"."""
        return _MONTHS[_MONTH_BY_NAME[m.group(1).lower()] - 1]


def _roman_value(numeral: str) -> int | None:
    """Return the value of a well-formed Roman numeral, else None."""
    if not numeral or not _ROMAN_VALID.fullmatch(numeral):
        return None
    total = 0
    for i, ch in enumerate(numeral):
        value = _ROMAN_VALUES[ch]
        if i + 1 < len(numeral) and _ROMAN_VALUES[numeral[i + 1]] > value:
            total -= value
        else:
            total += value
    return total or None


# Leading whitespace of a spaced operator ("a  =  b"): the whole run when the match starts
# where the run starts, none when it starts inside one. A plain leading ``\s*`` let
# re.sub retry from every position of a long run that no operator follows (quadratic);
# the only way to start inside a run is right after a match whose trailing ``\s*`` took
# the run's first part, i.e. never, so the replacements are the same.
_LEAD_WS = r"(?:(?<!\s)\s*|(?<=\s))"


def _symbols(text: str) -> str:
    """Read the symbols that remain after the number passes; drop decoration."""
    text = re.sub(r"(?<=\w)\s*&\s*(?=\w)|(?<!\S)&(?!\S)", " and ", text)
    text = text.replace("&", " and ")
    text = re.sub(r"\bw/o\b", "without", text)
    text = re.sub(r"(?<![\w/])w/(?=\s|\w)", "with ", text)
    text = text.replace("±", " plus or minus ")
    text = re.sub(r"\s[-−]\s(?=\S)", lambda m: " — ", text)
    text = text.replace("−", "-")
    text = re.sub(_LEAD_WS + r"(?:<=|≤)\s*", " less than or equal to ", text)
    text = re.sub(_LEAD_WS + r"(?:>=|≥)\s*", " greater than or equal to ", text)
    text = re.sub(r"(?<=\w)\s+<\s+(?=\w)", " less than ", text)
    text = re.sub(r"(?<=\w)\s+>\s+(?=\w)", " greater than ", text)
    text = re.sub(_LEAD_WS + r"=+\s*", " equals ", text)
    text = re.sub(_LEAD_WS + r"\+\s*", " plus ", text)
    text = re.sub(_LEAD_WS + r"[×÷]\s*", lambda m: " times " if "×" in m.group(0) else " divided by ", text)
    text = re.sub(r"(?<=\w)/(?=\w)", " ", text)
    text = text.replace("%", " percent ")
    text = text.replace("@", " at ")
    text = text.replace("°", " degrees ")
    text = text.replace("§", " section ")
    text = text.replace("--", " — ").replace("–", "—")
    text = text.replace("«", "“").replace("»", "”").replace("„", "“").replace("‚", "'")
    text = re.sub(r"[\[{]", "(", text)
    text = re.sub(r"[\]}]", ")", text)
    # Markup and decoration: no sound of their own.
    text = re.sub(r"[*_#~^`|\\<>/]", " ", text)
    return text


# Several passes below carry a second alternative that only exists to keep re.sub linear.
# When a pattern fails at one position of a long run, re.sub retries at every later position
# of the run, and each retry rescans to the run's end (quadratic). Where every later attempt
# inside the run is bound to fail the same way, the extra alternative consumes the run and
# the handler gives it back unchanged, so the text reads exactly as before.

# Markdown link: ``[text](url)``. Every "[" before the same "]" shares its fate (the first
# one is tried first), so a failed "[..." is skipped to its "]". The url may not contain
# "](": with that, the url scans of different links never overlap.
_MARKDOWN_LINK = r"\[([^\]\n]+)\]\((?:[^)\s\]]|\](?!\())*\)|\[[^\]\n]*"

# A host label may not start where a scheme or "www." link starts, so that a skipped host
# run never swallows one ("a.http://b.c" still reads the link from "http").
_NOT_LINK_START = r"(?!\b(?:https?|ftp)://|\bwww\.)"
_URL = (
    r"(?i:\b(?:https?|ftp)://[^\s<>\"]+|\bwww\.[^\s<>\"]+"
    r"|\b[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:com|org|net|io|dev|edu|gov|info|co\.uk|ai|app)\b(?:/[^\s<>\"]*)?"
    # A bare host that failed: any later start in the same host run sees a subset of its
    # possible endings and fails too, so the run is consumed (and given back unchanged).
    rf"|(?P<skip>\b(?:{_NOT_LINK_START}[a-z0-9-])+(?:\.(?:{_NOT_LINK_START}[a-z0-9-])+)*))"
)

# Spaced thousands ("1 000 000"): the leftmost 0-group is the required one, so the groups
# split one way only (the old ``(?: \d{3})*(?: 0\d{2})(?: \d{3})*`` tried every split: cubic).
# A 3-digit group right after a 1-3 digit token that may itself start a match is not tried
# as a start: the match from that token covers it, and if that failed, this fails too.
_GROUP_CONTINUES = r"(?:(?<=(?<![\d,.])\d )|(?<=(?<![\d,.])\d\d )|(?<=(?<![\d,.])\d\d\d ))\d{3}(?!\d)"
_SPACED_THOUSANDS = (
    rf"(?<![\d,.])(?!{_GROUP_CONTINUES})\d{{1,3}}(?: [1-9]\d{{2}})*(?: 0\d{{2}})(?: \d{{3}})*(?![\d,.]|\s\d)"
)


def _build_english_passes() -> list[tuple[re.Pattern[str], str]]:
    """Return (pattern, method name) pairs in the order they run."""
    num = _NUM
    p: list[tuple[str, str]] = [
        (_MARKDOWN_LINK, "markdown_link"),
        (r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", "email"),
        (_URL, "url"),
        (r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\d)", "phone"),
        (
            rf"(?<![\w.])(?P<sign>-)?(?P<cur>[{_CURRENCY_SYMBOLS}])\s?(?P<amt>{num})(?P<mag>{_MAGNITUDE_RE})\b",
            "money_magnitude",
        ),
        (
            rf"(?<![\w.])(?P<cur>[{_CURRENCY_SYMBOLS}])(?P<a>{num})\s?[-–]\s?[{_CURRENCY_SYMBOLS}]?(?P<b>{num})(?![\d.])",
            "money_range",
        ),
        (rf"(?<![\w.])(?P<sign>-)?(?P<cur>[{_CURRENCY_SYMBOLS}])\s?(?P<amt>{num})(?![\d])", "money_prefix"),
        (
            rf"(?<![\w.])(?P<sign>-)?(?P<amt>{num})\s?(?P<cur>[{_CURRENCY_SYMBOLS}]|USD|EUR|GBP|JPY)(?!\w)",
            "money_suffix",
        ),
        (r"(?<![\w.])(\d{1,3})\s?¢", "cents"),
        (_SPACED_THOUSANDS, "spaced_thousands"),
        (r"(?<![\w./-])(\d{4})-(\d{1,2})-(\d{1,2})(?![\w/-]|\.\d)", "iso_date"),
        (r"(?<![\w./-])(\d{1,2})([/.])(\d{1,2})\2(\d{4})(?![\w/]|\.\d)", "numeric_date"),
        (r"(?<![\w./-])(\d{1,2})(/)(\d{1,2})/(\d{2})(?![\w/]|\.\d)", "numeric_date"),
        (
            rf"\b(?P<mon>{_MONTH_RE})\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?(?!\d|:\d|\.\d)"
            rf"(?:,?\s+(?P<year>\d{{4}})(?!\d))?",
            "month_day",
        ),
        (
            rf"(?:\b[Tt]he\s+)?(?<![\w.])(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon>{_MONTH_RE})"
            rf"(?!\w)(?:,?\s+(?P<year>\d{{4}})(?!\d))?",
            "day_month",
        ),
        (rf"\b(?P<mon>{_MONTH_RE})\s+(?P<year>\d{{4}})(?!\d)", "month_year"),
        (
            r"(?<![\w:.])(?P<h>[01]?\d|2[0-4]):(?P<m>[0-5]\d)(?::(?P<s>[0-5]\d))?(?![\d:])"
            r"(?:\s?(?P<ampm>[aApP]\.?\s?[mM]\.?)(?!\w))?",
            "clock_time",
        ),
        (r"(?<![\w:.])(?P<h>1[0-2]|0?[1-9])\s?(?P<ampm>[aApP]\.?\s?[mM]\.?)(?!\w)", "hour_meridiem"),
        (r"(?<![\w.,:-])(\d{1,4})(?:\s?–\s?|-(?=\d))(\d{1,4})(?![\w.,:]*\d)", "number_range"),
        (r"(?<=[AP]M)\s?[-–]\s?(?=\w)", "meridiem_range"),
        (r"(?<![\w.])(-?" + num + r")\s?%", "percent"),
        (r"(?<![\w'])(\d)'\s?(\d{1,2})(?:\"|''|”)", "feet_inches"),
        (rf"(?<![\w.])(?P<amt>-?{num})\s?(?P<unit>{_UNIT_RE})(?![\w°/])", "unit"),
        (r"(?<![\w/.])(\d+)\s+(\d+)/(\d+)(?![\w/]|\.\d)", "mixed_fraction"),
        (r"(?<![\w/.])(\d+\.\d+)/(\d+)(?![\w/]|\.\d)", "rating"),
        (r"(?<![\w/.])(\d+)[/⁄](\d+)(?![\w/]|\.\d)", "fraction"),
        (r"(?<![\w'’])(1\d\d0|20\d0)s\b", "decade"),
        (r"(?:(?<=\s)|^|(?<=[(\"“]))['’](\d)0s\b", "short_decade"),
        (r"(?<![\w.'’])([2-9])0s\b", "short_decade"),
        (r"(?<![\w.])(" + _THOUSANDS + r"|\d+)(?:st|nd|rd|th|ST|ND|RD|TH)\b", "ordinal"),
        (r"\b(?:No|no|Nos|nos|NO)\.\s?(?=\d)", "number_sign"),
        (r"#\s?(?=\d)", "number_sign"),
        (r"(?<![\w#])([A-G])#(?![\w#])", "sharp"),
        (r"\b(pp|p)\.\s?(?=\d)", "pages"),
        (r"(?<![\w.])(\d+(?:\.\d+)?)(bn|mn|[kMB])\b", "magnitude_number"),
        # Only the longest "1.2.3" can pass the look-ahead; the cheap (?!\d|\.\d) rejects the
        # shorter ones before the look-ahead rescans the rest of the word for each (quadratic).
        (r"(?<![\w.])\d+(?:\.\d+){2,}(?!\d|\.\d)(?![\w.]*\d)", "version"),
        (r"(?<![\w.])\.(\d+)", "leading_decimal"),
        (r"(?<=[^\W\d_])-(?=\d)", "joining_hyphen"),
        (r"(?:(?<![\w.-])(?P<sign>-)|(?<!\d))(?P<num>" + num + r")(?!\d)", "number"),
        (rf"\b({_ROMAN_CARDINAL_CONTEXT})\s+([IVXLCDM]+)(?![\w'])", "roman_cardinal"),
        (
            rf"\b({_ROMAN_REGNAL_CONTEXT})\s+(I[IVX]{{0,4}}|V[I]{{0,3}}|X[IVX]{{0,4}})(?![\w'])",
            "roman_regnal",
        ),
        (r"(\b[A-Z][a-z]+\s+)(St|Dr|Ave|Blvd|Rd)\.?(?!\w)(?!\s+[A-Z])", "street"),
        (r"\b(" + "|".join(_TITLES) + r")\.(?=\s+[A-Z])|\b(Mr|Mrs|Ms|Dr|St)(?=\s+[A-Z])", "title"),
        (r"\b(Mr|Mrs|Ms|Mx|Dr|Prof)\.", "title"),
        (rf"(?<![\w.])(?i:{_ABBREVIATION_RE})(?![\w])", "abbreviation"),
        (r"(?<![\w.])((?:[A-Za-z]\.){2,})(?!\w)", "dotted_acronym"),
    ]
    return [(re.compile(pattern), name) for pattern, name in p]


_ENGLISH_PASSES = _build_english_passes()

# Multi-word constructs the segmenter must keep in one piece (no split inside them).
_BOUND_PASS_NAMES = frozenset(
    {
        "money_magnitude",
        "money_range",
        "money_prefix",
        "spaced_thousands",
        "money_suffix",
        "iso_date",
        "numeric_date",
        "month_day",
        "day_month",
        "month_year",
        "clock_time",
        "hour_meridiem",
        "percent",
        "unit",
        "mixed_fraction",
        "number_sign",
        "pages",
        "number_range",
        "phone",
        "roman_cardinal",
        "roman_regnal",
        "title",
    }
)


# Passes whose match is only a prefix of the unit ("No. " of "No. 5").
_BOUND_TO_NEXT_WORD = frozenset({"title", "number_sign", "pages"})
_NEXT_WORD = re.compile(r"\s*(\S+)")


def _normalize_english(text: str, british: bool) -> str:
    passes = _Passes(british)
    for pattern, name in _ENGLISH_PASSES:
        handler: Callable[[Match], str] = getattr(passes, name)
        text = pattern.sub(handler, text)
    # Digits glued to letters ("mp3", "COVID-19") still read as numbers.
    text = re.sub(r"\d+", lambda m: " " + _int_text(m.group(0), british) + " ", text)
    return _symbols(text)


# --------------------------------------------------------------------------- public API


def normalize(text: str, lang: str = "en-us") -> str:
    """Return ``text`` as speakable words for ``lang``, with whitespace collapsed."""
    if not text:
        return ""
    english = is_english(lang)
    text = _nfkc(text)
    text = _drop_unspeakable(text, english)
    if english:
        text = _normalize_english(text, is_british(lang))
    text = _collapse_punctuation(text)
    return _finish(text)


def bound_spans(text: str, lang: str = "en-us") -> list[tuple[int, int]]:
    """Return spans of ``text`` that read as one unit ("$3 billion", "Dr. Smith", "10:30 a.m.").

    A segment boundary inside one of them would change how it is read, so the
    segmenter avoids cutting there. Spans are sorted and may overlap.
    """
    if not is_english(lang) or not text:
        return []
    spans = []
    for pattern, name in _ENGLISH_PASSES:
        if name not in _BOUND_PASS_NAMES:
            continue
        word_start = word_end = -1  # the word last read after a match of this pass
        for m in pattern.finditer(text):
            start, end = m.span()
            spaced = any(c.isspace() for c in m.group(0))
            if name in _BOUND_TO_NEXT_WORD:
                # "Dr." and "No." belong with the word after them, which their pattern only peeks at.
                # Several matches can sit inside one word ("#1#1#1"): reuse its end rather than
                # rescan it for each (quadratic), and test only the gap before it for spaces.
                if not word_start <= end < word_end:
                    following = _NEXT_WORD.match(text, end)
                    word_start, word_end = following.span(1) if following else (-1, -1)
                if word_end != -1:
                    spaced = spaced or end < word_start
                    end = word_end
            if spaced:
                spans.append((start, end))
    spans.sort()
    return spans
