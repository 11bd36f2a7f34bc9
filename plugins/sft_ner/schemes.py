"""Tagging schemes: IOB1, IOB2 and BIOES read, IOB2 used everywhere inside the task.

IOB1 (the original CoNLL-2003 files) lets ``I-X`` open an entity and keeps ``B-X`` for an entity
that directly follows another of the same type; IOB2 opens every entity with ``B-X``. BIOES adds
``E-X`` (last word) and ``S-X`` (single word). Converting IOB1 to IOB2 is the identity on valid
IOB2, which is why auto-detection can never damage IOB2 data.
"""

from __future__ import annotations

SCHEMES = ("iob1", "iob2", "bioes")
_PREFIXES = {"iob1": "BI", "iob2": "BI", "bioes": "BIES"}


def split_tag(tag: str) -> tuple[str, str]:
    """("B", "PER") for "B-PER", ("O", "") for "O"; raises ValueError for anything else."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or not kind or prefix not in ("B", "I", "E", "S"):
        raise ValueError(tag)
    return prefix, kind


def _opens(tags: list[str], i: int) -> bool:
    """True when ``I-X`` at ``i`` does not continue an entity of type X (IOB1 style)."""
    kind = tags[i][2:]
    return i == 0 or tags[i - 1] == "O" or tags[i - 1][2:] != kind


def detect_scheme(sentences: list[list[str]]) -> str:
    """BIOES if any E-/S- tag, else IOB1 if any I- tag opens an entity, else IOB2."""
    opened = False
    for tags in sentences:
        for i, tag in enumerate(tags):
            if tag[:2] in ("E-", "S-"):
                return "bioes"
            if tag[:2] == "I-" and _opens(tags, i):
                opened = True
    return "iob1" if opened else "iob2"


def first_violation(tags: list[str], scheme: str) -> tuple[int, str] | None:
    """(index, reason) of the first tag that breaks ``scheme``, or None when the sentence is valid."""
    allowed = _PREFIXES[scheme]
    for i, tag in enumerate(tags):
        prefix = tag[0]
        if prefix != "O" and prefix not in allowed:
            return i, f"{tag} is not a tag of {scheme.upper()}"
    if scheme == "iob1":
        return None
    for i, tag in enumerate(tags):
        prefix, kind = tag[0], tag[2:]
        before = tags[i - 1] if i else "O"
        after = tags[i + 1] if i + 1 < len(tags) else "O"
        inside = before != "O" and before[2:] == kind and before[0] in "BI"
        if prefix in "IE" and not inside:
            return i, f"{tag} does not continue an entity"
        if scheme == "bioes" and prefix in "BI" and not (after[2:] == kind and after[0] in "IE"):
            return i, f"{tag} is not followed by I-{kind} or E-{kind}"
    return None


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """IOB2 tags of a sentence in ``scheme``; an I-/E- tag that opens an entity becomes B-."""
    out = []
    for i, tag in enumerate(tags):
        prefix = tag[0]
        if prefix == "O":
            out.append("O")
        elif prefix in "BS":
            out.append("B" + tag[1:])
        else:  # I or E
            out.append(("B" if _opens(tags, i) else "I") + tag[1:])
    return out


def entity_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word exclusive) of each entity, by strict IOB2 rules as seqeval's
    strict mode reads them: an entity opens with B-X and continues with I-X; a stray I-X is no entity."""
    spans = []
    start, kind = None, None
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag[:2] == "I-" and tag[2:] == kind):
            spans.append((kind, start, i))
            start = None
        if tag[:2] == "B-":
            start, kind = i, tag[2:]
    return spans


def allowed_transitions(labels: list[str]) -> tuple[list[bool], list[list[bool]]]:
    """Valid IOB2 starts (per label) and transitions (from, to): I-X only after B-X or I-X."""
    def may_follow(prev: str | None, tag: str) -> bool:
        if not tag.startswith("I-"):
            return True
        return prev is not None and prev != "O" and prev[2:] == tag[2:]

    start = [may_follow(None, tag) for tag in labels]
    return start, [[may_follow(prev, tag) for tag in labels] for prev in labels]
