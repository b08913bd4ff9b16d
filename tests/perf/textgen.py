"""Deterministic English-like prose and Python-like code for the benchmarks in this folder.

Everything comes from `random.Random(seed)` and the word lists below, so a given seed always
writes the same bytes. Word frequencies follow a Zipf-like curve (a few words very common,
most rare), sentences and paragraphs vary in length, and about one paragraph in forty has a
non-ASCII character, so the tokenizer sees something close to real documentation and source.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path


def _words(text: str) -> list[str]:
    return text.split()


FUNCTION_WORDS = _words(
    """the of and to a in is that for it as was with be by on not he this are or
his from at which but have an they you were her she there one all we their has been would
more if will can its when who so no what about up out them into some than then only other
could these two may first also new any our after most very where over just such through
between each under while both those because does during before should must"""
)

CONTENT_WORDS = _words(
    """time year people way day man thing woman life child world school state
family student group country problem hand part place case week company system program
question work government number night point home water room mother area money story fact
month lot right study book eye job word business issue side kind head house service friend
father power hour game line end member law car city community name president team minute
idea kid body information back parent face others level office door health person art war
history party result change morning reason research girl guy moment air teacher force
education foot boy age policy process music market sense nation plan college interest death
experience effect use class control care field development role effort rate heart drug show
leader light voice wife police mind price report decision son view relationship town road
arm difference value building action model season society tax director position player record
paper space ground form event official matter center couple site project activity star table
need court oil situation cost industry figure street image phone data picture practice piece
land product doctor wall patient worker news test movie north love support technology step
baby computer type attention film tree source organization hair window evidence population
site energy shard token layer gradient batch network training dataset manifest parser cache
file folder page document scan index query server client request response memory disk
"""
)

VERBS = _words(
    """say make go know take see come think look want give use find tell ask work seem
feel try leave call need become put mean keep let begin help talk turn start show hear play
run move like live believe hold bring happen write provide sit stand lose pay meet include
continue set learn change lead understand watch follow stop create speak read allow add spend
grow open walk win offer remember consider appear buy wait serve die send expect build stay
fall cut reach kill remain suggest raise pass sell require report decide pull return explain
hope develop carry break receive agree support hit produce eat cover catch draw choose load
parse encode decode split merge compute train evaluate store fetch update"""
)

ADJECTIVES = _words(
    """other new good high old great big small large national young different long
little important political bad white real best right social only public sure low early able
human local late hard major better economic strong possible whole free military true federal
international full special easy clear recent certain personal open red difficult available
likely short single medical current wrong private past foreign fine common poor natural
significant similar hot dead central happy serious ready simple left physical general
environmental financial blue democratic dark various entire close legal religious cold final
main green nice huge popular traditional cultural empty raw binary sparse dense"""
)

ACCENTED = ["café", "naïve", "résumé", "façade", "coöperate", "Zürich", "São Paulo", "déjà vu"]
PUNCT = [",", ",", ",", ";", " —", ":"]
CODE_TYPES = ["int", "str", "float", "bool", "bytes", "list[int]", "dict[str, int]", "Path"]


@dataclass(frozen=True)
class GeneratedFile:
    relpath: str
    text: str


def _inflect(verb: str, rng: random.Random) -> str:
    ending = rng.choice(("s", "ed", ""))
    if ending == "ed" and verb.endswith("e"):
        return verb + "d"
    return verb + ending


def _zipf(words: list[str], exponent: float = 1.05) -> tuple[list[str], list[float]]:
    """The words with cumulative Zipf weights, for `random.choices(cum_weights=...)`."""
    weights = [1.0 / (rank + 1) ** exponent for rank in range(len(words))]
    return words, list(itertools.accumulate(weights))


class TextGen:
    """Prose and code, deterministic for a seed."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        # The most frequent ranks are function words, as in real English; the rest is mixed.
        vocab = list(dict.fromkeys(FUNCTION_WORDS[:20] + self._shuffled_mix()))
        self.words, self.cum = _zipf(vocab, 0.85)
        self.nouns, self.noun_cum = _zipf(CONTENT_WORDS, 0.9)
        self.verbs, self.verb_cum = _zipf(VERBS, 0.9)
        self.adjs, self.adj_cum = _zipf(ADJECTIVES, 0.9)

    def _shuffled_mix(self) -> list[str]:
        pool = FUNCTION_WORDS[20:] + CONTENT_WORDS + VERBS + ADJECTIVES
        mixed = pool[:]
        random.Random(12345).shuffle(mixed)
        return mixed

    # ---- prose -----------------------------------------------------------------------------

    def sentence(self) -> str:
        rng = self.rng
        n = max(3, int(rng.gauss(16, 7)))
        drawn = rng.choices(self.words, cum_weights=self.cum, k=n)
        words = [w for w, prev in zip(drawn, ["", *drawn[:-1]], strict=True) if w != prev]
        # A grammatical-looking spine so the text is not pure word salad.
        spine = [
            rng.choice(("The", "A", "This", "Each", "Our", "Every")),
            rng.choices(self.adjs, cum_weights=self.adj_cum)[0],
            rng.choices(self.nouns, cum_weights=self.noun_cum)[0],
            _inflect(rng.choices(self.verbs, cum_weights=self.verb_cum)[0], rng),
        ]
        words = spine + words
        for i in range(5, len(words) - 1):
            r = rng.random()
            if r < 0.06:
                words[i] += rng.choice(PUNCT)
            elif r < 0.075:
                words[i] = str(rng.choice((rng.randint(2, 99), rng.randint(1900, 2030))))
            elif r < 0.08:
                words[i] = rng.choice(CONTENT_WORDS).capitalize()
        return " ".join(words) + rng.choice((".", ".", ".", ".", "?", "!"))

    def paragraph(self) -> str:
        text = " ".join(self.sentence() for _ in range(self.rng.randint(2, 8)))
        if self.rng.random() < 0.025:
            text += f" See also {self.rng.choice(ACCENTED)}."
        return text

    def prose(self, target_bytes: int, markdown: bool = True) -> str:
        rng = self.rng
        parts: list[str] = []
        size = 0
        if markdown:
            parts.append("# " + self.title())
        while size < target_bytes:
            r = rng.random()
            if markdown and r < 0.08:
                block = "## " + self.title()
            elif markdown and r < 0.14:
                block = "\n".join(f"- {self.sentence()}" for _ in range(rng.randint(2, 6)))
            elif markdown and r < 0.17:
                block = "```python\n" + self.code_block(rng.randint(3, 12)) + "```"
            else:
                block = self.paragraph()
            parts.append(block)
            size += len(block) + 2
        return "\n\n".join(parts) + "\n"

    def title(self) -> str:
        words = self.rng.choices(self.nouns, cum_weights=self.noun_cum, k=self.rng.randint(2, 5))
        return " ".join(words).capitalize()

    # ---- code ------------------------------------------------------------------------------

    def ident(self, parts: int | None = None) -> str:
        k = parts or self.rng.randint(1, 3)
        return "_".join(self.rng.choices(self.nouns, cum_weights=self.noun_cum, k=k))

    def class_name(self) -> str:
        return "".join(w.capitalize() for w in self.ident(self.rng.randint(1, 3)).split("_"))

    def statement(self, names: list[str]) -> str:
        rng = self.rng
        r = rng.random()
        a, b = rng.choice(names), rng.choice(names)
        if r < 0.25:
            op = rng.choice(("+", "-", "*", "//", "%"))
            return f"{self.ident()} = {a} {op} {rng.randint(0, 1000)}"
        if r < 0.4:
            return f"{self.ident()} = {a}.{rng.choice(self.verbs)}({b})"
        if r < 0.5:
            return f"# {self.sentence()}"
        if r < 0.6:
            return f'logger.info("{rng.choice(self.verbs)} %s: %d", {a}, len({b}))'
        if r < 0.7:
            return f"{a}[{rng.randint(0, 9)}] = {b}"
        if r < 0.8:
            return f"result.append(({a}, {b!r}))".replace("'", '"')
        if r < 0.9:
            return f'{a} = {{"{self.ident(1)}": {b}, "{self.ident(1)}": {rng.random():.4f}}}'
        return f'assert {a} is not None, f"{{{b}}} must be set"'

    def block(self, indent: int, names: list[str], depth: int = 0) -> list[str]:
        rng = self.rng
        pad = " " * indent
        lines = []
        for _ in range(rng.randint(2, 7)):
            r = rng.random()
            if depth < 2 and r < 0.15:
                lines.append(f"{pad}if {rng.choice(names)} > {rng.randint(0, 100)}:")
                lines += self.block(indent + 4, names, depth + 1)
            elif depth < 2 and r < 0.27:
                var = self.ident(1)
                lines.append(f"{pad}for {var} in {rng.choice(names)}:")
                lines += self.block(indent + 4, [*names, var], depth + 1)
            else:
                lines.append(pad + self.statement(names))
        return lines

    def function(self, indent: int = 0) -> list[str]:
        rng = self.rng
        pad = " " * indent
        args = [self.ident(rng.randint(1, 2)) for _ in range(rng.randint(0, 4))]
        sig = ", ".join(f"{a}: {rng.choice(CODE_TYPES)}" for a in args)
        if indent:
            sig = "self" + (", " + sig if sig else "")
        lines = [f"{pad}def {self.ident()}({sig}) -> {rng.choice(CODE_TYPES)}:"]
        if rng.random() < 0.6:
            lines.append(f'{pad}    """{self.sentence()}"""')
        lines += self.block(indent + 4, args or ["self" if indent else "None"])
        lines.append(f"{pad}    return {rng.choice(args or ['None'])}")
        return lines

    def code_block(self, n_lines: int) -> str:
        return "\n".join(self.block(0, ["data", "value"])[:n_lines]) + "\n"

    def code(self, target_bytes: int) -> str:
        rng = self.rng
        mods = rng.choices(self.nouns, k=rng.randint(2, 6))
        lines = [
            f'"""{self.sentence()}"""',
            "",
            "from __future__ import annotations",
            "",
            "import logging",
            *(f"from {self.ident(1)}.{self.ident(1)} import {m}" for m in mods),
            "",
            "logger = logging.getLogger(__name__)",
            "",
        ]
        size = sum(len(line) + 1 for line in lines)
        while size < target_bytes:
            if rng.random() < 0.3:
                chunk = [f"class {self.class_name()}:", f'    """{self.sentence()}"""', ""]
                for _ in range(rng.randint(1, 5)):
                    chunk += self.function(indent=4) + [""]
            else:
                chunk = self.function()
            chunk += ["", ""]
            lines += chunk
            size += sum(len(line) + 1 for line in chunk)
        return "\n".join(lines).rstrip() + "\n"


def file_sizes(rng: random.Random, total_bytes: int, median: int, sigma: float) -> list[int]:
    """Log-normal file sizes (many small files, a long tail of big ones) summing to ~total."""
    sizes, total = [], 0
    while total < total_bytes:
        size = int(min(max(rng.lognormvariate(math.log(median), sigma), 300), median * 60))
        sizes.append(size)
        total += size
    return sizes


def generate_tree(
    root: Path,
    total_bytes: int,
    seed: int = 0,
    code_share: float = 0.35,
    median: int = 9000,
    sigma: float = 1.0,
) -> list[GeneratedFile]:
    """Write a tree of .md/.txt/.rst prose and .py code under `root`; returns what it wrote."""
    gen = TextGen(seed)
    rng = random.Random(seed + 1)
    files = []
    for i, size in enumerate(file_sizes(rng, total_bytes, median, sigma)):
        if rng.random() < code_share:
            pkg = f"src/pkg_{i % 37:02d}/sub_{(i // 37) % 5}"
            relpath, text = f"{pkg}/{gen.ident()}_{i}.py", gen.code(size)
        else:
            ext = rng.choices((".md", ".txt", ".rst"), weights=(6, 3, 1))[0]
            section = f"docs/section_{i % 23:02d}"
            relpath = f"{section}/{gen.ident(2)}_{i}{ext}"
            text = gen.prose(size, markdown=ext == ".md")
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        files.append(GeneratedFile(relpath, text))
    return files


def small_files(root: Path, count: int, seed: int = 0, size: int = 600) -> list[GeneratedFile]:
    """`count` small, distinct prose files of about `size` bytes, 100 per directory."""
    gen = TextGen(seed)
    files = []
    for i in range(count):
        relpath = f"d{i // 100:03d}/note_{i:05d}.txt"
        text = gen.prose(size, markdown=False)
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
        files.append(GeneratedFile(relpath, text))
    return files
