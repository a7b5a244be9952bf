"""Facts and the answer judge shared by the English suites (``english``, ``english-steps``).

- Word lists: capitals, opposites, plurals (with accepted alternatives), and passage words. Past tenses were
  dropped: SmolLM2-135M-Instruct writes "thinked", "singed" (near chance; see the README's suite table).
- :func:`fact_split`: every fact (a country, a word, an unordered pair of addends) belongs to one split by a salted
  stable hash, 60/20/20 train/validation/test, so an item of one split never asks a fact that items of another
  split ask (no near-copies across splits, whatever the phrasing). Prompts are still filtered by
  :func:`evals.suites.base.split_of` on top, as every suite's are.
- :func:`judge_line`: whether a line (or a short reply) gives the right answer to one question, tolerant of wording
  and strict about facts (the rule is in its docstring).

What it leaves out: prompt templates and item assembly (``evals.suites.english`` / ``english_steps``).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

CAPITALS: tuple[tuple[str, str], ...] = (
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"), ("England", "London"), ("Greece", "Athens"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Ireland", "Dublin"), ("Norway", "Oslo"),
    ("Sweden", "Stockholm"), ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("Kenya", "Nairobi"),
    ("Thailand", "Bangkok"), ("Peru", "Lima"), ("Cuba", "Havana"), ("Finland", "Helsinki"),
    ("Denmark", "Copenhagen"), ("Belgium", "Brussels"), ("Argentina", "Buenos Aires"), ("Canada", "Ottawa"),
    ("the Netherlands", "Amsterdam"), ("Scotland", "Edinburgh"), ("the Czech Republic", "Prague"),
    ("India", "New Delhi"), ("Ukraine", "Kyiv"), ("Australia", "Canberra"), ("Iran", "Tehran"),
    ("Iraq", "Baghdad"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"), ("Wales", "Cardiff"),
    ("Turkey", "Ankara"), ("Chile", "Santiago"), ("Romania", "Bucharest"),
)
CAPITAL_ALTERNATIVES: dict[str, tuple[str, ...]] = {"Kyiv": ("Kiev",), "New Delhi": ("Delhi",)}
OPPOSITES: tuple[tuple[str, str], ...] = (
    ("hot", "cold"), ("big", "small"), ("up", "down"), ("fast", "slow"), ("happy", "sad"), ("day", "night"),
    ("open", "closed"), ("dark", "light"), ("young", "old"), ("good", "bad"), ("rich", "poor"), ("tall", "short"),
    ("wet", "dry"), ("hard", "soft"), ("full", "empty"), ("early", "late"), ("win", "lose"),
    ("strong", "weak"), ("loud", "quiet"), ("black", "white"), ("left", "right"), ("love", "hate"),
    ("true", "false"), ("push", "pull"), ("above", "below"), ("buy", "sell"), ("inside", "outside"),
    ("north", "south"), ("east", "west"), ("clean", "dirty"), ("thick", "thin"), ("wide", "narrow"),
    ("alive", "dead"), ("top", "bottom"), ("front", "back"), ("boy", "girl"), ("king", "queen"),
    ("cheap", "expensive"), ("safe", "dangerous"), ("sweet", "sour"),
)
OPPOSITE_ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "short": ("long", "tall"), "old": ("young", "new"), "light": ("dark", "heavy"), "right": ("left", "wrong"),
    "hard": ("soft", "easy"), "big": ("small", "little"), "happy": ("sad", "unhappy"), "good": ("bad", "evil"),
    "open": ("closed", "shut"), "loud": ("quiet", "soft"), "sweet": ("sour", "bitter"), "quiet": ("loud", "noisy"),
    "sad": ("happy", "glad"), "slow": ("fast", "quick"), "wide": ("narrow", "thin"), "thin": ("thick", "fat", "wide"),
    "front": ("back", "rear"), "cheap": ("expensive", "dear"), "late": ("early", "on time"),
}
PLURALS: tuple[tuple[str, str], ...] = (
    ("child", "children"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("man", "men"),
    ("woman", "women"), ("goose", "geese"), ("box", "boxes"), ("city", "cities"), ("knife", "knives"),
    ("leaf", "leaves"), ("baby", "babies"), ("bus", "buses"), ("dog", "dogs"), ("cat", "cats"), ("book", "books"),
    ("person", "people"), ("wolf", "wolves"), ("church", "churches"), ("story", "stories"), ("wife", "wives"),
    ("glass", "glasses"), ("dish", "dishes"), ("fox", "foxes"), ("party", "parties"), ("lady", "ladies"),
    ("country", "countries"), ("family", "families"), ("boy", "boys"), ("key", "keys"), ("toy", "toys"),
    ("house", "houses"), ("tree", "trees"), ("car", "cars"), ("apple", "apples"), ("bird", "birds"),
    ("horse", "horses"), ("watch", "watches"), ("brush", "brushes"), ("class", "classes"), ("girl", "girls"),
    ("table", "tables"), ("chair", "chairs"), ("cup", "cups"), ("pen", "pens"), ("flower", "flowers"),
)
PLURAL_ALTERNATIVES: dict[str, tuple[str, ...]] = {"people": ("persons",)}
NAMES: tuple[str, ...] = ("Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Lucy", "Tom",
                          "Mia", "Oscar", "Paul", "Rosa", "Sam", "Vera")
PETS: tuple[str, ...] = ("dog", "cat", "rabbit", "parrot", "horse", "fish", "turtle", "hamster", "goat", "pony")
COLOURS: tuple[str, ...] = ("red", "blue", "green", "yellow", "black", "white", "purple", "orange", "brown", "grey")
TOWNS: tuple[str, ...] = ("Springfield", "Riverton", "Oakdale", "Milltown", "Lakeside", "Greenville", "Brookfield",
                          "Fairview", "Ashford", "Westbury")
SUM_MAX = 12  # addends are 1..SUM_MAX

NUMBER_FAMILIES: tuple[str, ...] = ("sum", "passage-age")
FACT_SALT = "english-facts/v1"
_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"-?\d+")
_PARENS = re.compile(r"\([^)]*\)")
_ENUM = re.compile(r"^\s*(\d+\s*[.):]|[-*]|[a-z][.)])\s*", re.IGNORECASE)


def fact_split(key: str) -> str:
    """The split a fact belongs to: a salted stable hash, 60/20/20 train/validation/test."""
    bucket = zlib.crc32(f"{FACT_SALT}/{key}".encode()) % 10
    return "test" if bucket < 2 else "validation" if bucket < 4 else "train"


def facts_of(pairs: tuple[tuple[str, str], ...], family: str, split: str) -> list[tuple[str, str]]:
    """The pairs of ``family`` whose fact (keyed by the pair's first element) is in ``split``."""
    return [p for p in pairs if fact_split(f"{family}:{p[0].lower()}") == split]


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text`` (punctuation and case ignored)."""
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Question:
    """What one question asks, as the judge needs it (serialised into an example's meta)."""

    family: str  # capital | opposite | plural | sum | passage-town | passage-pet | passage-colour | passage-age
    subject: str  # the country / word / person asked about ("" for sums)
    accepted: tuple[str, ...]  # right answers; the first is the reference

    def to_meta(self) -> dict:
        return {"family": self.family, "subject": self.subject, "accepted": list(self.accepted)}

    @staticmethod
    def from_meta(meta: dict) -> Question:
        return Question(str(meta["family"]), str(meta["subject"]), tuple(str(a) for a in meta["accepted"]))


def _vocab(family: str) -> tuple[set[str], set[str]]:
    """(subjects, values) a line of ``family`` may mention; for opposites both are the same set."""
    if family == "capital":
        alts = {a for v in CAPITAL_ALTERNATIVES.values() for a in v}
        return {c for c, _ in CAPITALS}, {v for _, v in CAPITALS} | alts
    if family == "opposite":
        every = {w for p in OPPOSITES for w in p} | {a for v in OPPOSITE_ALTERNATIVES.values() for a in v}
        return every, every
    if family == "plural":
        alts = {a for v in PLURAL_ALTERNATIVES.values() for a in v}
        return {s for s, _ in PLURALS}, {p for _, p in PLURALS} | alts
    if family.startswith("passage-"):
        values = {"passage-town": TOWNS, "passage-pet": PETS, "passage-colour": COLOURS, "passage-age": ()}[family]
        return set(NAMES), set(values)
    return set(), set()


_VOCAB_CACHE: dict[str, tuple[dict[tuple[str, ...], str], dict[tuple[str, ...], str]]] = {}


def _phrases(family: str) -> tuple[dict[tuple[str, ...], str], dict[tuple[str, ...], str]]:
    if family not in _VOCAB_CACHE:
        subjects, values = _vocab(family)
        _VOCAB_CACHE[family] = ({tuple(words(s)): s.lower() for s in subjects if words(s)},
                                {tuple(words(v)): v.lower() for v in values if words(v)})
    return _VOCAB_CACHE[family]


def mentions(text: str, family: str) -> list[tuple[str, str]]:
    """``[(role, phrase), ...]`` in reading order: role ``"s"`` (a subject) or ``"v"`` (a value); the longest phrase
    wins at each position ("New Delhi" over "Delhi"); the article "the" before a country is optional."""
    subj, vals = _phrases(family)
    both = {**{k: ("s", v) for k, v in subj.items()}, **{k: ("v", v) for k, v in vals.items()}}
    if family == "opposite":
        both = {k: ("v", v) for k, v in vals.items()}
    lengths = sorted({len(k) for k in both}, reverse=True)
    toks = words(text)
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        for n in lengths:
            hit = both.get(tuple(toks[i:i + n])) or (both.get(("the", *toks[i:i + n])) if family == "capital" else None)
            if hit:
                out.append(hit)
                i += n
                break
        else:
            i += 1
    return out


def clean_line(line: str) -> str:
    """A line without its enumeration ("2. ", "- ") and parenthesised asides."""
    return _PARENS.sub(" ", _ENUM.sub("", line, count=1))


def names_subject(line: str, q: Question) -> bool:
    """Whether ``line`` names ``q``'s own subject: its country or word ("opposite of W" for opposites); never for
    sums and passages (their questions share no distinct subject)."""
    if q.family not in ("capital", "plural", "opposite"):
        return False
    subject = " ".join(words(q.subject))
    if q.family == "opposite":
        toks = words(clean_line(line))
        return any(toks[i:i + 2] == ["opposite", "of"] and (stated := mentions(" ".join(toks[i + 2:]), q.family))
                   and stated[0][1] == subject for i in range(len(toks) - 1))
    return any(role == "s" and p == subject for role, p in mentions(clean_line(line), q.family))


def judge_line(line: object, q: Question) -> bool:
    """Whether ``line`` answers ``q`` rightly. Never raises.

    Rule (after :func:`clean_line`; case and punctuation ignored):
    - sums and ages: the last number in the line equals the value ("7", "3 + 4 = 7", "The answer is 7." are right; "3 + 4 = 8"
      and "7 - 1 = 6" are wrong);
    - opposites (subjects and values are one word set): if the line says "opposite of W", W must be the asked word
      and the word after it is the answer; else the first listed word is the answer;
    - the rest: if the line names the asked subject (country, word, person), the answer is the first value named
      after it before another subject (else the nearest value before it); if it names only other subjects it is
      wrong (it answers another question); if it names no subject, every value it names must be right.
    The answer must be one of ``q.accepted``: "The capital of France is Paris." is right for Paris; "The capital
    of Spain is Paris.", "Paris or Rome" and "The plural of "mouse" is "mouses"" are wrong."""
    if not isinstance(line, str):
        return False
    text = clean_line(line[:2_000])
    accepted = {" ".join(words(a)) for a in q.accepted}
    if q.family in NUMBER_FAMILIES:
        nums = _NUMBER.findall(text.replace(",", ""))
        return bool(nums) and nums[-1] in accepted
    found = mentions(text, q.family)
    if not found:
        return False
    subject = " ".join(words(q.subject))
    if q.family == "opposite":
        toks = words(text)
        for i in range(len(toks) - 1):
            if toks[i] == "opposite" and toks[i + 1] == "of":
                stated = mentions(" ".join(toks[i + 2:]), q.family)
                if not stated or stated[0][1] != subject:
                    return False
                return len(stated) > 1 and stated[1][1] in accepted
        return found[0][1] in accepted
    subject_at = [i for i, (role, p) in enumerate(found) if role == "s" and p == subject]
    if subject_at:
        i = subject_at[0]
        for role, p in found[i + 1:]:
            if role == "s" and p != subject:
                break
            if role == "v":
                return p in accepted
        before = [p for role, p in found[:i] if role == "v"]
        return bool(before) and before[-1] in accepted
    if any(role == "s" for role, _ in found):
        return False
    return all(p in accepted for _, p in found)
