"""Write the scripts' --help into the documentation, so its help blocks are the parsers' own and cannot
drift from them: between `<!-- help: SCRIPT -->` and `<!-- /help -->` the whole help, between
`<!-- usage: SCRIPT -->` and `<!-- /usage -->` its usage lines, in README.md and docs/*.md.
`--check` changes nothing and exits with status 1, naming the blocks, when a file is behind its
parsers (a test runs it).

    python scripts/readme_help.py          # rewrite the blocks
    python scripts/readme_help.py --check  # compare only
"""

import argparse
import functools
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100  # columns argparse wraps the help to, as a code block shows it
BLOCK = re.compile(
    r"(?P<open><!-- (?P<kind>help|usage): (?P<script>[\w./]+) -->\n```\n)(?P<text>.*?)(?P<close>```\n<!-- /(?P=kind) -->)",
    re.DOTALL,
)


def documents():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@functools.cache
def script_help(script):
    """`python SCRIPT -h` as argparse prints it at WIDTH columns, run as a user would (in a subprocess,
    so no script is imported here); the bare '-h, --help' section is left out, as the original README did."""
    result = subprocess.run(
        [sys.executable, script, "-h"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": str(WIDTH)},
    )
    return result.stdout.replace("options:\n  -h, --help            show this help message and exit\n\n", "")


def block_text(kind, script):
    text = script_help(script)
    return text.split("\n\n")[0] + "\n" if kind == "usage" else text


def updated(text):
    """`text` with every block regenerated, and the blocks that changed."""
    changed = []

    def regenerate(match):
        fresh = block_text(match["kind"], match["script"])
        if fresh != match["text"]:
            changed.append(f"{match['kind']} of {match['script']}")
        return match["open"] + fresh + match["close"]

    return BLOCK.sub(regenerate, text), changed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether the blocks are current")
    args = parser.parse_args()
    stale = []
    for path in documents():
        text, changed = updated(path.read_text())
        stale += [f"{path.relative_to(ROOT)}: {block}" for block in changed]
        if changed and not args.check:
            path.write_text(text)
    for line in stale:
        print(f"{line} {'is out of date' if args.check else 'regenerated'}")
    if args.check and stale:
        print("run python scripts/readme_help.py to regenerate them")
        sys.exit(1)
    if not stale:
        print("help blocks current")


if __name__ == "__main__":
    main()
