"""Seeded English sentences for the demo corpus.

A few hundred words in simple grammar templates: varied enough that a model must listen
rather than memorise, small enough that a ~2 M-parameter model learns the language in
minutes. Every word is in the demo tokenizer's alphabet (lower case, apostrophe).
"""

from __future__ import annotations

import random
from typing import Callable, Iterator

NAMES = (
    "anna ben carla david emma frank grace henry ivan julia kevin laura martin nina oscar "
    "paula rachel simon tina victor wendy alice bruno clara daniel elena felix george helen omar"
).split()
ADJECTIVES = (
    "red green blue yellow black white small large old new young quiet loud bright dark warm "
    "cold heavy light fast slow happy tired clever gentle strong soft sharp round empty full "
    "clean dirty tall short wooden silver golden broken famous strange simple busy lazy brave "
    "hungry careful friendly narrow wide"
).split()
NOUNS = (
    "dog cat bird horse car bus train boat book letter box chair table window door garden "
    "house river bridge road city village market school teacher doctor farmer driver baker "
    "friend neighbor apple orange bottle basket clock lamp key phone computer picture song "
    "story ticket coat hat shoe bag cup plate knife spoon flower tree stone mountain island "
    "forest field ship plane bicycle camera radio kitchen office station library hospital "
    "museum castle tower lake beach cloud candle pencil map wallet jacket blanket engine "
    "ladder mirror"
).split()
# (base, past) of verbs that take an object.
TRANSITIVE = tuple(
    tuple(pair.split("/"))
    for pair in (
        "see/saw find/found bring/brought carry/carried paint/painted clean/cleaned open/opened "
        "close/closed move/moved watch/watched fix/fixed sell/sold buy/bought take/took give/gave "
        "follow/followed push/pushed pull/pulled lift/lifted drop/dropped hold/held build/built "
        "draw/drew count/counted visit/visited leave/left keep/kept wash/washed check/checked "
        "borrow/borrowed return/returned cook/cooked hide/hid catch/caught throw/threw want/wanted "
        "need/needed like/liked help/helped call/called order/ordered share/shared"
    ).split()
)
# (base, past, -ing) of verbs without an object.
INTRANSITIVE = tuple(
    tuple(triple.split("/"))
    for triple in (
        "walk/walked/walking run/ran/running sing/sang/singing sleep/slept/sleeping "
        "wait/waited/waiting laugh/laughed/laughing swim/swam/swimming dance/danced/dancing "
        "work/worked/working play/played/playing travel/traveled/traveling smile/smiled/smiling "
        "listen/listened/listening jump/jumped/jumping rest/rested/resting talk/talked/talking "
        "cry/cried/crying shout/shouted/shouting sit/sat/sitting stand/stood/standing"
    ).split()
)
ADVERBS = (
    "quickly slowly quietly loudly carefully happily suddenly early late again together "
    "gently easily badly calmly softly proudly"
).split()
PREPOSITIONS = "near behind under beside inside outside above across along around past toward through".split()
TIMES = (
    "yesterday", "today", "tomorrow", "this morning", "last night", "every day", "on monday",
    "on tuesday", "on wednesday", "on thursday", "on friday", "on saturday", "on sunday",
    "in the evening", "after lunch", "before dinner", "at noon", "next week", "last year", "in the summer",
)
NUMBERS = (
    "two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty"
).split()
DETERMINERS = "the a my your his her our their this that".split()
PRONOUNS = "i you we they he she".split()
MODALS = ("will", "can", "should", "must", "might", "could")
DEGREES = ("very", "too", "quite", "really", "not")
_IRREGULAR_PLURALS = {"knife": "knives", "shoe": "shoes"}


def plural(noun: str) -> str:
    """English plural of the demo's nouns (regular rules plus the few exceptions)."""
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _templates(r: random.Random) -> tuple[Callable[[], str], ...]:
    """Each template draws its own words from ``r``; together they cover statements,
    questions, requests, numbers, possessives and contractions."""
    c = r.choice

    def np_() -> str:
        return f"{c(DETERMINERS)} {c(ADJECTIVES)} {c(NOUNS)}" if r.random() < 0.5 else f"{c(DETERMINERS)} {c(NOUNS)}"

    return (
        lambda: f"{np_()} {c(TRANSITIVE)[1]} {np_()} {c(PREPOSITIONS)} the {c(NOUNS)}",
        lambda: f"{c(NAMES)} {c(TRANSITIVE)[1]} {c(NUMBERS)} {c(ADJECTIVES)} {plural(c(NOUNS))} {c(TIMES)}",
        lambda: f"{c(PRONOUNS)} {c(MODALS)} {c(TRANSITIVE)[0]} {np_()} {c(TIMES)}",
        lambda: f"please {c(TRANSITIVE)[0]} the {c(ADJECTIVES)} {c(NOUNS)} {c(ADVERBS)}",
        lambda: f"did {c(NAMES)} {c(TRANSITIVE)[0]} {np_()} {c(PREPOSITIONS)} the {c(NOUNS)}",
        lambda: f"{c(NAMES)}'s {c(NOUNS)} is {c(DEGREES)} {c(ADJECTIVES)}",
        lambda: f"the {plural(c(NOUNS))} {c(INTRANSITIVE)[1]} {c(ADVERBS)} {c(PREPOSITIONS)} the {c(NOUNS)}",
        lambda: f"we can't {c(INTRANSITIVE)[0]} {c(PREPOSITIONS)} the {c(NOUNS)} because it's {c(ADJECTIVES)}",
        lambda: f"{c(PRONOUNS)} {c(INTRANSITIVE)[1]} {c(TIMES)} and then {c(TRANSITIVE)[1]} {np_()}",
        lambda: f"there are {c(NUMBERS)} {plural(c(NOUNS))} {c(PREPOSITIONS)} the {c(NOUNS)}",
        lambda: f"where did {c(NAMES)} put the {c(ADJECTIVES)} {c(NOUNS)}",
        lambda: f"{c(NAMES)} and {c(NAMES)} {c(INTRANSITIVE)[1]} {c(PREPOSITIONS)} the {c(NOUNS)} {c(TIMES)}",
        lambda: f"i don't think the {c(NOUNS)} was {c(ADJECTIVES)}",
        lambda: f"how many {plural(c(NOUNS))} did {c(PRONOUNS)} {c(TRANSITIVE)[0]} {c(TIMES)}",
        lambda: f"at {c(NUMBERS[:11])} o'clock {c(NAMES)} {c(TRANSITIVE)[1]} the {c(ADJECTIVES)} {c(NOUNS)}",
        lambda: f"the {c(NOUNS)} {c(PREPOSITIONS)} the {c(NOUNS)} looks {c(DEGREES)} {c(ADJECTIVES)}",
        lambda: f"{c(NAMES)} was {c(INTRANSITIVE)[2]} while {c(NAMES)} {c(TRANSITIVE)[1]} {np_()}",
        lambda: f"my {c(NOUNS)} didn't {c(TRANSITIVE)[0]} the {plural(c(NOUNS))} {c(TIMES)}",
    )


def sentence_stream(seed: int) -> Iterator[str]:
    """Endless sentences, each distinct from all before it, the same sequence for a seed."""
    r = random.Random(seed)
    templates = _templates(r)
    seen: set[str] = set()
    while True:
        sentence = r.choice(templates)()
        if sentence not in seen:
            seen.add(sentence)
            yield sentence

