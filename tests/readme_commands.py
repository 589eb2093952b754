"""The README's shell commands, parsed: the fenced ```bash / ```sh / ```shell blocks, split into simple
commands (continuation lines joined; `&&`, `||`, `;`, `|` separate; `$(...)` inside is a command too;
comments, redirections and `VAR=value` prefixes set aside). Used by tests/test_readme_commands.py."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^[ \t]*```(bash|sh|shell)[ \t]*\n(.*?)^[ \t]*```", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>>", "&>"}
SUBSHELL = re.compile(r"\$\(([^()]*)\)")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
# what the reader fills in: <photos>, <vgg16 file>, <date>; replaced by one word under PLACEHOLDER_VALUE
PLACEHOLDER = re.compile(r"<([a-z0-9][a-z0-9 ._-]*)>")
PLACEHOLDER_VALUE = "/placeholder/"


@dataclass(frozen=True)
class Command:
    line: int                    # README line of the block's first line
    env: dict[str, str]          # VAR=value prefixes (and `env VAR=value`)
    argv: list[str]              # program and arguments, placeholders such as <photos> kept
    text: str                    # the source command, for messages

    @property
    def program(self) -> str:
        return self.argv[0]


def shell_blocks(readme: Path) -> list[tuple[int, str]]:
    text = readme.read_text(encoding="utf-8")
    return [(text.count("\n", 0, match.start()) + 2, match.group(2)) for match in FENCE.finditer(text)]


def commands(readme: Path) -> list[Command]:
    """Every simple command of the README's shell blocks. A block's own plain assignments (`C="..."`) are
    expanded where `$C` stands alone as a word, split on whitespace as the shell does."""
    found = []
    for line, block in shell_blocks(readme):
        variables: dict[str, str] = {}
        # a continuation line joins the next one (inside quotes too: `C="... \` newline `..."`)
        joined = PLACEHOLDER.sub(lambda m: PLACEHOLDER_VALUE + m.group(1).replace(" ", "_"),
                                 re.sub(r"\\\n", " ", block))
        for source in joined.splitlines():
            for inner in SUBSHELL.findall(source):
                found += _split(line, inner, variables)
            found += _split(line, SUBSHELL.sub("SUBSHELL", source), variables)
    return found


def _split(line: int, source: str, variables: dict[str, str]) -> list[Command]:
    lexer = shlex.shlex(source, posix=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    try:
        tokens = list(lexer)
    except ValueError as exc:                       # unbalanced quotes: report it as a command that fails
        return [Command(line, {}, [f"<unparsable: {exc}>"], source)]
    out, current = [], []
    for token in tokens + [";"]:
        if token in SEPARATORS:
            if current:
                command = _command(line, current, source)
                if command.argv:
                    out.append(command)
                else:                               # a plain assignment such as C="...": later $C expands
                    variables.update(command.env)
            current = []
        elif token.startswith("$") and token[1:] in variables:
            current += variables[token[1:]].split()
        else:
            current.append(token)
    return out


def _command(line: int, tokens: list[str], source: str) -> Command:
    argv, skip = [], False
    for token in tokens:
        if skip:
            skip = False
        elif token in REDIRECTS:
            skip = True
        elif re.match(r"^\d?>>?\S+$", token) and not token.startswith(">="):     # `>file`, `2>/dev/null`
            continue
        else:
            argv.append(token)
    env = {}
    while argv and (ASSIGNMENT.match(argv[0]) or argv[0] == "env"):
        head = argv.pop(0)
        if head != "env":
            key, _, value = head.partition("=")
            env[key] = value
    return Command(line, env, argv, source.strip())
