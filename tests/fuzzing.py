"""Spec mutants and the error contract they must keep, shared by tests/test_fuzz.py and scripts/fuzz.py.

`mutate(text, rng)` damages a spec the way people and tools do: at the line
level (lines deleted, repeated, swapped, re-indented, the file cut short)
and at the token level (numbers made huge, negative, fractional or nan,
names misspelt or swapped for keywords, YAML syntax and odd line breaks
inserted, expressions that explode).  `contract_problems(path)` runs
`archc check` and `archc summary` on a file in this process and lists every
way they broke the contract:

- exit 0, or exit 2 with exactly one line `PATH:LINE:COL: error: ...` on
  stderr, nothing on stdout, and LINE:COL inside the file (lines counted as
  YAML counts them);
- no traceback, no internal error (exit 1);
- within `SECONDS` and `MEMORY` of address space beyond what the process had.
"""

from __future__ import annotations

import random
import re
import resource
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from typer.testing import CliRunner

from archcompiler.cli import app

SECONDS = 20  # per command; a static check of any zoo spec takes well under one
MEMORY = 3 * 2**30  # extra address space per command; a zoo spec needs a few MB

# What YAML ends a line with (so what a position's line number counts).
LINE_BREAK = re.compile(r"\r\n|[\r\n\x85\u2028\u2029]")
ERROR_LINE = re.compile(r"(?P<path>.*?):(?P<line>\d+):(?P<col>\d+): error: \S")
TOKEN = re.compile(r"\d+(?:\.\d+)?|[A-Za-z_][A-Za-z0-9_]*|\S")

NUMBERS = ["0", "-1", "1", "2", "3.5", "-0.0", "2147483648", "1099511627776", "1e308", "1e999", ".nan", ".inf",
           "-.inf", "100000000000000000000000000000", "9" * 5000, "0x1F", "1_000", "007"]
WORDS = ["concat", "add", "residual", "seq", "from", "repeat", "when", "input", "body", "blocks", "params",
         "identity", "null", "true", "forward", "training", "state_dict", "__init__", "conv", "linear", "relu",
         "flatten", "scale", "shortcut", "act", "outputs", "train_only", "defaults", "k", "out", "s", "pad"]
SNIPPETS = ["{", "}", "[", "]", ":", ",", "- ", "$", '"', "'", "!", "&a ", "*a", "<<: *a", "#", "|", ">", "%",
            "@", "\t", "\r", "\x85", "\u2028", "\ufeff", "!!int 1.5", "!!float abc", "!!python/object:os.system",
            "${", "}}", "\\", "\x00", "é", "🙂", "~"]
EXPRESSIONS = ['"${a * a}"', '"${1 / 0}"', '"${' + "9" * 400 + ' / 3}"', '"${' + "+".join(["1"] * 3000) + '}"',
               '"${' + "not " * 500 + '1}"', '"${(((((((1)))))))}"', '"${2 ** 10}"', '"${max(1, 2)}"',
               '"$nope"', '"${x if y else z}"', "${c * 2}", '"${1e308 * 10}"']


def mutate(text: str, rng: random.Random, donors: list[str] | None = None) -> str:
    """`text` with one to three random mutations (lines from `donors`, other specs, may be spliced in)."""
    for _ in range(rng.randint(1, 3)):
        text = rng.choice(_MUTATIONS)(text, rng, donors or [text])
    return text


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _delete_line(text, rng, donors):
    lines = _lines(text)
    del lines[rng.randrange(len(lines))]
    return "\n".join(lines)


def _repeat_line(text, rng, donors):
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines[i:i] = [lines[i]] * rng.choice([1, 1, 2, 50])
    return "\n".join(lines)


def _swap_lines(text, rng, donors):
    lines = _lines(text)
    i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _reindent_line(text, rng, donors):
    lines = _lines(text)
    i = rng.randrange(len(lines))
    lines[i] = ("  " + lines[i]) if rng.random() < 0.5 else lines[i][2:]
    return "\n".join(lines)


def _splice_line(text, rng, donors):
    lines = _lines(text)
    lines.insert(rng.randrange(len(lines) + 1), rng.choice(_lines(rng.choice(donors))))
    return "\n".join(lines)


def _truncate(text, rng, donors):
    return text[: rng.randrange(len(text) + 1)]


def _tokens(text: str) -> list[re.Match]:
    return list(TOKEN.finditer(text))


def _replace_token(text, rng, donors):
    tokens = _tokens(text)
    if not tokens:
        return text
    t = rng.choice(tokens)
    word = t.group()
    if word[0].isdigit():
        new = rng.choice(NUMBERS)
    elif word[0].isalpha() or word[0] == "_":
        new = rng.choice([_typo(word, rng), rng.choice(WORDS), rng.choice(tokens).group(), "$" + word])
    else:
        new = rng.choice(SNIPPETS)
    return text[: t.start()] + new + text[t.end():]


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(len(word))
    kind = rng.randrange(3)
    if kind == 0 and len(word) > 1:
        return word[:i] + word[i + 1:]
    if kind == 1 and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + rng.choice("aeioustx") + word[i:]


def _insert(text, rng, donors):
    at = rng.randrange(len(text) + 1)
    return text[:at] + rng.choice(SNIPPETS + EXPRESSIONS + NUMBERS[:8]) + text[at:]


def _delete_token(text, rng, donors):
    tokens = _tokens(text)
    if not tokens:
        return text
    t = rng.choice(tokens)
    return text[: t.start()] + text[t.end():]


def _nest(text, rng, donors):
    """Deep nesting in one value, flow or block style."""
    tokens = [t for t in _tokens(text) if t.group()[0].isdigit()]
    if not tokens:
        return text
    t, depth = rng.choice(tokens), rng.choice([50, 1000, 20000])
    deep = "[" * depth + "1" + "]" * depth if rng.random() < 0.5 else "{a: " * depth + "1" + "}" * depth
    return text[: t.start()] + deep + text[t.end():]


def _param_chain(text, rng, donors):
    """Parameters that each square the one before: 40 lines of YAML, a number of 10^12 digits."""
    chain = "".join(f'  p{i + 1}: "${{p{i} * p{i}}}"\n' for i in range(rng.choice([10, 32, 60])))
    text = re.sub(r"^params:\n", "params:\n  p0: 10\n" + chain, text, count=1, flags=re.M)
    return re.sub(r"(out: )\d+", r'\1"$p%d"' % rng.randrange(10), text, count=1)


_MUTATIONS = [_delete_line, _repeat_line, _swap_lines, _reindent_line, _splice_line, _truncate, _replace_token,
              _replace_token, _replace_token, _insert, _insert, _delete_token, _nest, _param_chain]


class Hang(BaseException):
    """A command ran past `SECONDS` (a BaseException, so archc's own handlers cannot swallow it)."""


@contextmanager
def bounded(seconds: float | None = None, memory: int | None = None) -> Iterator[None]:
    """Raise `Hang` after `seconds`, and make allocating more than `memory` extra bytes fail (default: the module's)."""
    seconds, memory = seconds or SECONDS, memory or MEMORY
    def alarm(signum, frame):
        raise Hang

    old_handler = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    in_use = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    limit = in_use + memory if hard == resource.RLIM_INFINITY else min(in_use + memory, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, old_handler)


def position_inside(text: str, line: int, col: int) -> bool:
    """Whether LINE:COL (1-based, columns in characters) lies in `text`, lines counted as YAML does."""
    lines = LINE_BREAK.split(text)
    return 1 <= line <= len(lines) and 1 <= col <= len(lines[line - 1]) + 1


def contract_problems(path: Path, commands: tuple[str, ...] = ("check", "summary")) -> list[str]:
    """Every way `archc COMMAND path` breaks the error contract, for each command; [] when it keeps it."""
    text = path.read_bytes().decode("utf-8", errors="replace")
    runner = CliRunner()
    problems = []
    for command in commands:
        start = time.perf_counter()
        try:
            with bounded():
                result = runner.invoke(app, [command, str(path)])
        except Hang:
            problems.append(f"{command}: still running after {SECONDS:g} s")
            continue
        seconds = time.perf_counter() - start
        where = f"{command} (exit {result.exit_code}, {seconds:.1f} s)"
        if result.exit_code == 0:
            continue
        if result.exit_code != 2:
            problems.append(f"{where}: {result.stderr.strip()[-300:] or result.exception!r}")
            continue
        lines = result.stderr.splitlines()
        m = ERROR_LINE.match(lines[0]) if len(lines) == 1 else None
        if m is None or m["path"] != str(path):
            problems.append(f"{where}: not one PATH:LINE:COL line: {result.stderr[:300]!r}")
        elif not position_inside(text, int(m["line"]), int(m["col"])):
            problems.append(f"{where}: {m['line']}:{m['col']} lies outside the file: {lines[0][:300]}")
        elif result.stdout:
            problems.append(f"{where}: printed to stdout as well: {result.stdout[:200]!r}")
        elif len(lines[0]) > 2000:
            problems.append(f"{where}: a {len(lines[0]):,}-character error line")
    return problems
