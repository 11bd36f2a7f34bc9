"""Writes the built-in sample corpus (train.jsonl, eval.jsonl): short English-German captions
composed from a small grammar, so that every German article, adjective ending and verb form agrees.

    python plugins/sft_translation/sample_data/generate.py
"""

from __future__ import annotations

import json
import random
from pathlib import Path

# English noun: (German singular, German plural, gender); gender picks articles and endings
NOUNS = {
    "man": ("Mann", "Männer", "m"), "dog": ("Hund", "Hunde", "m"), "boy": ("Junge", "Jungen", "m"),
    "woman": ("Frau", "Frauen", "f"), "cat": ("Katze", "Katzen", "f"), "girl": ("Mädchen", "Mädchen", "n"),
    "child": ("Kind", "Kinder", "n"), "horse": ("Pferd", "Pferde", "n"),
}
PLURALS = {"man": "men", "dog": "dogs", "boy": "boys", "woman": "women", "cat": "cats", "girl": "girls",
           "child": "children", "horse": "horses"}
ADJECTIVES = {"big": "groß", "small": "klein", "young": "jung", "old": "alt", "black": "schwarz",
              "white": "weiß", "brown": "braun", "happy": "fröhlich"}
# English verb (3rd person singular): (German singular, German plural, English plural)
VERBS = {"runs": ("läuft", "laufen", "run"), "sleeps": ("schläft", "schlafen", "sleep"),
         "plays": ("spielt", "spielen", "play"), "sits": ("sitzt", "sitzen", "sit"),
         "waits": ("wartet", "warten", "wait"), "stands": ("steht", "stehen", "stand")}
PLACES = {"in the park": "im Park", "on the street": "auf der Straße", "in the garden": "im Garten",
          "at the beach": "am Strand", "in the snow": "im Schnee", "on the grass": "auf dem Gras",
          "by the lake": "am See", "in front of the house": "vor dem Haus"}
# transitive verbs: (German singular, German plural, English plural)
CARRY = {"holds": ("hält", "halten", "hold"), "carries": ("trägt", "tragen", "carry"),
         "sees": ("sieht", "sehen", "see"), "throws": ("wirft", "werfen", "throw")}
# English object: (German noun, gender)
OBJECTS = {"ball": ("Ball", "m"), "book": ("Buch", "n"), "bag": ("Tasche", "f"), "flower": ("Blume", "f"),
           "hat": ("Hut", "m"), "cup": ("Tasse", "f"), "stick": ("Stock", "m"), "box": ("Kiste", "f")}
COLOURS = {"red": "rot", "blue": "blau", "green": "grün", "yellow": "gelb"}

DEFINITE = {"m": "der", "f": "die", "n": "das"}
INDEFINITE_ACC = {"m": "einen", "f": "eine", "n": "ein"}
ACC_ENDING = {"m": "en", "f": "e", "n": "es"}  # adjective after ein/eine/einen, accusative


def subject(rng: random.Random) -> tuple[str, str, bool]:
    noun = rng.choice(list(NOUNS))
    singular, plural_de, gender = NOUNS[noun]
    plural = rng.random() < 0.3
    adjective = rng.choice([None, *ADJECTIVES]) if rng.random() < 0.6 else None
    en_noun = PLURALS[noun] if plural else noun
    if plural:
        de = "die " + (ADJECTIVES[adjective] + "en " if adjective else "") + plural_de
    else:
        de = DEFINITE[gender] + " " + (ADJECTIVES[adjective] + "e " if adjective else "") + singular
    en = "the " + (adjective + " " if adjective else "") + en_noun
    return en, de, plural


def sentence(rng: random.Random) -> tuple[str, str]:
    en_subject, de_subject, plural = subject(rng)
    if rng.random() < 0.5:
        verb = rng.choice(list(VERBS))
        de_verb = VERBS[verb][1 if plural else 0]
        en_verb = VERBS[verb][2] if plural else verb
        place = rng.choice(list(PLACES))
        en, de = f"{en_subject} {en_verb} {place}", f"{de_subject} {de_verb} {PLACES[place]}"
    else:
        verb = rng.choice(list(CARRY))
        de_verb = CARRY[verb][1 if plural else 0]
        en_verb = CARRY[verb][2] if plural else verb
        thing = rng.choice(list(OBJECTS))
        noun, gender = OBJECTS[thing]
        colour = rng.choice([None, *COLOURS])
        if colour:
            en_object = ("an " if colour[0] in "aeiou" else "a ") + f"{colour} {thing}"
            de_object = f"{INDEFINITE_ACC[gender]} {COLOURS[colour]}{ACC_ENDING[gender]} {noun}"
        else:
            en_object = ("an " if thing[0] in "aeiou" else "a ") + thing
            de_object = f"{INDEFINITE_ACC[gender]} {noun}"
        en, de = f"{en_subject} {en_verb} {en_object}", f"{de_subject} {de_verb} {de_object}"
        if rng.random() < 0.3:
            place = rng.choice(list(PLACES))
            en, de = f"{en} {place}", f"{de} {PLACES[place]}"
    return en[0].upper() + en[1:] + ".", de[0].upper() + de[1:] + "."


def main() -> None:
    rng = random.Random(2026)
    pairs: dict[str, str] = {}
    while len(pairs) < 1150:
        en, de = sentence(rng)
        pairs.setdefault(en, de)
    items = list(pairs.items())
    folder = Path(__file__).parent
    for name, part in (("train.jsonl", items[:1000]), ("eval.jsonl", items[1000:])):
        with open(folder / name, "w", encoding="utf-8") as f:
            for en, de in part:
                f.write(json.dumps({"translation": {"en": en, "de": de}}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
