"""IAM's wildcards (`*` any run, `?` any one character) matched without regular expressions.

Policy text comes from the model: a regex built from it (`.*a.*a.*a...b`) backtracks for minutes on a
long value. Here a pattern is cut at its stars into segments, placed leftmost one after another: at
worst O(len(pattern) x len(value)), whatever the pattern.
"""

from __future__ import annotations

# A resolved string: (is_pattern, text) pieces. Policy text is pattern (`*` and `?` are wildcards);
# what a variable took from the request, and the escapes ${*} ${?} ${$}, are literal.
Tokens = tuple[tuple[bool, str], ...]

# A glob as atoms: a one-character string stands for itself, STAR for any run, ONE for any one character.
STAR, ONE = "*?", "??"  # two characters each, so never a literal atom


def glob_match(tokens: Tokens, value: str, ignore_case: bool = False, arn: bool = False) -> bool:
    """Whether resolved text matches `value` whole. With `arn`, a wildcard in one of the first five
    colon-separated parts stays inside that part (ArnLike checks each component separately).
    No regex and no backtracking: O(len(pattern) x len(value)) at worst, whatever the pattern."""
    atoms = _atoms(tokens, ignore_case)
    value = value.lower() if ignore_case else value
    if not arn:
        return _glob(atoms, value)
    parts, values = _split_colons(atoms), value.split(":", 5)
    return len(parts) == len(values) and all(_glob(p, v) for p, v in zip(parts, values))


def _atoms(tokens: Tokens, ignore_case: bool) -> tuple[str, ...]:
    atoms: list[str] = []
    for is_pattern, text in tokens:
        text = text.lower() if ignore_case else text
        atoms.extend(STAR if is_pattern and c == "*" else ONE if is_pattern and c == "?" else c for c in text)
    return tuple(atoms)


def _split_colons(atoms: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The atoms in at most six parts, split at the first five literal colons."""
    parts: list[tuple[str, ...]] = []
    start = 0
    for index, atom in enumerate(atoms):
        if atom == ":" and len(parts) < 5:
            parts.append(atoms[start:index])
            start = index + 1
    return [*parts, atoms[start:]]


def _glob(atoms: tuple[str, ...], value: str) -> bool:
    """The segments between stars: the first at the start, the last at the end, each middle one at its
    leftmost place after the one before (a later place never helps the rest: a star follows)."""
    segments = _segments(atoms)
    if len(segments) == 1:
        return len(segments[0]) == len(value) and _fits(segments[0], value, 0)
    first, *middle, last = segments
    end = len(value) - len(last)
    if end < len(first) or not _fits(first, value, 0) or not _fits(last, value, end):
        return False
    pos = len(first)
    for segment in middle:
        found = _find(segment, value, pos, end)
        if found < 0:
            return False
        pos = found + len(segment)
    return True


def _segments(atoms: tuple[str, ...]) -> list[tuple[str, ...]]:
    stars = [index for index, atom in enumerate(atoms) if atom == STAR]
    return [atoms[a + 1:b] for a, b in zip([-1, *stars], [*stars, len(atoms)])]


def _fits(segment: tuple[str, ...], value: str, start: int) -> bool:
    return all(a == ONE or a == value[start + i] for i, a in enumerate(segment))


def _find(segment: tuple[str, ...], value: str, pos: int, end: int) -> int:
    """The first index >= pos where `segment` fits wholly before `end`, or -1."""
    if ONE not in segment:
        return value.find("".join(segment), pos, end)
    for start in range(pos, end - len(segment) + 1):
        if _fits(segment, value, start):
            return start
    return -1
