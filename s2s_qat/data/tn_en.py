"""Built-in `tn-en` corpus: English text normalization, written form -> spoken form.

Deterministic from a seed. Written forms are rendered with babel (CLDR number, currency, date, time,
percent and unit formats); spoken forms with num2words and babel's long unit names. Each sentence
embeds one or more non-standard words in carrier text whose ordinary words are copied through.
"""
from __future__ import annotations

import datetime
import random
import re
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal, format_percent
from babel.units import format_unit
from num2words import num2words

LOCALE = "en_US"
_SPACES = re.compile(r"[\u00a0\u202f\u2009]")


def _clean_written(text: str) -> str:
    return _SPACES.sub(" ", text)


def spoken(text: str) -> str:
    """Normalise num2words output to the corpus' spoken style: lowercase, no hyphens, commas or 'and'."""
    words = text.lower().replace("-", " ").replace(",", " ").split()
    return " ".join(w for w in words if w != "and")


def say_int(n: int) -> str:
    return spoken(num2words(n))


def say_digits(digits: str) -> str:
    return " ".join(spoken(num2words(int(d))) for d in digits)


def say_decimal(text: str) -> str:
    """'3.14' -> 'three point one four' (digits after the point read one by one)."""
    whole, _, frac = text.replace(",", "").partition(".")
    out = say_int(int(whole))
    return f"{out} point {say_digits(frac)}" if frac else out


@dataclass(frozen=True)
class Entity:
    cls: str
    written: str
    spoken: str


# === Semiotic classes: each takes an RNG and returns (written, spoken) ===

def _magnitude(rng: random.Random, top: int = 6) -> int:
    return rng.randint(0, 10 ** rng.randint(1, top) - 1)


def gen_cardinal(rng: random.Random) -> tuple[str, str]:
    n = _magnitude(rng)
    # 1,000-9,999 always carry the group separator so they never read like a year (1000-2099).
    grouped = n >= 1000 and (n < 10000 or rng.random() < 0.6)
    written = format_decimal(n, locale=LOCALE) if grouped else str(n)
    return written, say_int(n)


def gen_ordinal(rng: random.Random) -> tuple[str, str]:
    n = rng.choice([rng.randint(1, 31), rng.randint(1, 100), rng.randint(1, 1000)])
    return num2words(n, to="ordinal_num"), spoken(num2words(n, to="ordinal"))


def gen_decimal(rng: random.Random) -> tuple[str, str]:
    text = f"{_magnitude(rng, 4)}.{rng.randint(0, 10 ** rng.randint(1, 3) - 1):0{rng.randint(1, 3)}d}"
    whole, frac = text.split(".")
    written = format_decimal(int(whole), locale=LOCALE) + "." + frac if rng.random() < 0.5 else text
    return written, say_decimal(text)


_CURRENCIES = {  # code: (unit singular, unit plural, cent singular, cent plural)
    "USD": ("dollar", "dollars", "cent", "cents"),
    "EUR": ("euro", "euros", "cent", "cents"),
    "GBP": ("pound", "pounds", "penny", "pence"),
}


def gen_money(rng: random.Random) -> tuple[str, str]:
    code = rng.choice(list(_CURRENCIES))
    one, many, cent, cents = _CURRENCIES[code]
    whole = _magnitude(rng, 5)
    frac = rng.randint(0, 99) if rng.random() < 0.6 else 0
    if frac:
        written = format_currency(whole + frac / 100, code, locale=LOCALE)
    else:
        written = format_currency(whole, code, locale=LOCALE, format="¤#,##0", currency_digits=False)
    words = f"{say_int(whole)} {one if whole == 1 else many}"
    if frac:
        words += f" {say_int(frac)} {cent if frac == 1 else cents}"
    return _clean_written(written), words


def _random_date(rng: random.Random) -> datetime.date:
    return datetime.date(1900, 1, 1) + datetime.timedelta(days=rng.randint(0, 200 * 365))


def say_year(year: int) -> str:
    return spoken(num2words(year, to="year"))


_DATE_PATTERNS = ("M/d/yyyy", "MMM d, yyyy", "MMMM d, yyyy", "MMMM d", "d MMMM yyyy")


def gen_date(rng: random.Random) -> tuple[str, str]:
    day = _random_date(rng)
    pattern = rng.choice(_DATE_PATTERNS)
    written = _clean_written(format_date(day, pattern, locale=LOCALE))
    month = format_date(day, "MMMM", locale=LOCALE).lower()
    ordinal = spoken(num2words(day.day, to="ordinal"))
    if pattern.startswith("d "):
        words = f"the {ordinal} of {month}"
    else:
        words = f"{month} {ordinal}"
    if "yyyy" in pattern:
        words += f" {say_year(day.year)}"
    return written, words


def gen_time(rng: random.Random) -> tuple[str, str]:
    moment = datetime.time(rng.randint(0, 23), rng.choice([0, 0, 5, 15, 30, 45, rng.randint(0, 59)]))
    if rng.random() < 0.6:
        written = _clean_written(format_time(moment, "h:mm a", locale=LOCALE))
        hour = moment.hour % 12 or 12
        words = say_int(hour)
        if moment.minute:
            words += (" oh " if moment.minute < 10 else " ") + say_int(moment.minute)
        words += " a m" if moment.hour < 12 else " p m"
        return written, words
    written = format_time(moment, "HH:mm", locale=LOCALE)
    words = say_int(moment.hour) if moment.hour else "zero"
    if moment.minute == 0:
        words += " hundred"
    else:
        words += (" oh " if moment.minute < 10 else " ") + say_int(moment.minute)
    return written, words


def gen_percent(rng: random.Random) -> tuple[str, str]:
    value = rng.randint(0, 100) if rng.random() < 0.5 else rng.randint(0, 999) / 10
    written = _clean_written(format_percent(value / 100, format="#,##0.#%", locale=LOCALE))
    return written, f"{say_decimal(written.rstrip('%'))} percent"  # read what is written ("49%", not "49.0")


_UNITS = (
    "length-kilometer", "length-meter", "length-centimeter", "length-mile", "length-foot",
    "mass-kilogram", "mass-gram", "mass-pound", "volume-liter", "volume-milliliter",
    "duration-hour", "duration-minute", "speed-kilometer-per-hour", "speed-mile-per-hour",
    "temperature-celsius", "temperature-fahrenheit", "digital-gigabyte", "digital-megabyte",
)


def gen_measure(rng: random.Random) -> tuple[str, str]:
    unit = rng.choice(_UNITS)
    value = str(rng.randint(1, 999)) if rng.random() < 0.6 else f"{rng.randint(0, 99)}.{rng.randint(1, 9)}"
    number = float(value) if "." in value else int(value)
    written = _clean_written(format_unit(number, unit, "short", locale=LOCALE))
    long_form = _clean_written(format_unit(number, unit, "long", locale=LOCALE))
    unit_words = long_form.split(" ", 1)[1].lower()
    return written, f"{say_decimal(value)} {unit_words}"


def gen_year(rng: random.Random) -> tuple[str, str]:
    year = rng.randint(1000, 2099)
    return str(year), say_year(year)


def gen_digits(rng: random.Random) -> tuple[str, str]:
    groups = rng.choice([(3, 4), (3, 3, 4), (4, 4), (2, 4, 4)])
    parts = ["".join(str(rng.randint(0, 9)) for _ in range(g)) for g in groups]
    if len(parts) == 3 and rng.random() < 0.5:
        written = f"({parts[0]}) {parts[1]}-{parts[2]}"
    else:
        written = "-".join(parts)
    return written, " ".join(say_digits(p) for p in parts)


CLASS_GENERATORS: Mapping[str, Callable[[random.Random], tuple[str, str]]] = {
    "cardinal": gen_cardinal,
    "ordinal": gen_ordinal,
    "decimal": gen_decimal,
    "money": gen_money,
    "date": gen_date,
    "time": gen_time,
    "percent": gen_percent,
    "measure": gen_measure,
    "year": gen_year,
    "digits": gen_digits,
}

# Ordinary words copied through unchanged (lowercase and capitalised forms both occur).
CARRIER_WORDS = tuple("""
the a an and or but so if then when while after before since until about around at by for from in
into near of on over to under with without we you they he she it i our your their his her its my
please call pay send meet book order ship leave arrive start finish check add remove keep take bring
buy sell rent save spend expect need want see read write print show note report said says told
meeting train flight bus package invoice ticket order room table bill fee price total balance deposit
distance weight speed temperature score height length budget limit rate account office station
store school hospital airport city street park river bridge road north south east west center
today tomorrow yesterday morning evening night week month year day hour minute time again only
about roughly nearly exactly almost more less than least most up down new old next last first
number code line phone extension gate platform seat page chapter volume issue item step level
""".split())

CARRIER_END = (".", ".", ".", "?", "!", "", "")


def rich_carrier_words() -> tuple[str, ...]:
    """Basic words plus the English display names of CLDR territories, languages, scripts and currencies
    (about 1,500 more words from babel): a realistic open vocabulary for subword tokenizers."""
    from babel import Locale

    names = Locale("en")
    words = set(CARRIER_WORDS)
    for table in (names.territories, names.languages, names.scripts, names.currencies):
        for value in table.values():
            words.update(w for w in re.findall(r"[A-Za-z]+", value) if len(w) > 1)
    return tuple(sorted(words))


CARRIER_VOCABULARIES: Mapping[str, Callable[[], tuple[str, ...]]] = {
    "basic": lambda: CARRIER_WORDS,
    "rich": rich_carrier_words,
}


def _entity(rng: random.Random, classes: list[str], weights: list[float]) -> Entity:
    cls = rng.choices(classes, weights=weights)[0]
    written, words = CLASS_GENERATORS[cls](rng)
    return Entity(cls, written, words)


def generate_pair(rng: random.Random, classes: Mapping[str, float], min_entities: int,
                  max_entities: int, carrier_words: tuple[int, int],
                  vocabulary: tuple[str, ...] = CARRIER_WORDS) -> tuple[str, str, tuple[str, ...]]:
    """One (written, spoken, classes used) sentence."""
    names = [c for c, w in classes.items() if w > 0]
    weights = [classes[c] for c in names]
    entities = [_entity(rng, names, weights) for _ in range(rng.randint(min_entities, max_entities))]
    n_words = rng.randint(*carrier_words)
    words = [rng.choice(vocabulary) for _ in range(n_words)]
    if words and rng.random() < 0.3:
        words[0] = words[0].capitalize()
    # Insert entities at sorted random slots among the carrier words.
    slots = sorted(rng.randint(0, len(words)) for _ in entities)
    written_parts: list[str] = []
    spoken_parts: list[str] = []
    it = iter(zip(slots, entities))
    pending = next(it, None)
    for i in range(len(words) + 1):
        while pending is not None and pending[0] == i:
            written_parts.append(pending[1].written)
            spoken_parts.append(pending[1].spoken)
            pending = next(it, None)
        if i < len(words):
            written_parts.append(words[i])
            spoken_parts.append(words[i])
    end = rng.choice(CARRIER_END)
    return " ".join(written_parts) + end, " ".join(spoken_parts) + end, tuple(e.cls for e in entities)


def generate_corpus(seed: int, num_examples: int, classes: Mapping[str, float], min_entities: int = 1,
                    max_entities: int = 1, carrier_words: tuple[int, int] = (2, 8),
                    carrier_vocabulary: str = "basic") -> Iterator[dict[str, str]]:
    """Yields {"source", "target", "classes"} rows; the same arguments give the same rows."""
    rng = random.Random(f"tn-en:{seed}")
    vocabulary = CARRIER_VOCABULARIES[carrier_vocabulary]()
    for _ in range(num_examples):
        source, target, used = generate_pair(rng, classes, min_entities, max_entities, carrier_words, vocabulary)
        yield {"source": source, "target": target, "classes": ",".join(used)}
