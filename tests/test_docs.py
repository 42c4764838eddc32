"""The documentation holds together: every relative link in README.md and docs/ leads to a file that is
there (and to a heading that is there, for a #fragment), and the help blocks are the parsers' own."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def github_anchor(heading):
    """The #fragment GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)  # a '# comment' in code is no heading
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def relative_links(path):
    for target in LINK.findall(path.read_text()):
        if not re.match(r"[a-z]+:", target):  # http:, https:, mailto: lead outside the repository
            yield target


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_lead_somewhere(document):
    broken = []
    for target in relative_links(document):
        file_part, _, fragment = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading #{fragment} in {linked.name}")
    assert not broken, f"{document.name}: " + "; ".join(broken)


def test_readme_is_a_page_not_a_manual():
    assert len((ROOT / "README.md").read_text().splitlines()) < 250


@pytest.mark.slow  # each script's -h in a process of its own, 15 s on Zen 3
def test_help_blocks_are_the_parsers_own():
    result = subprocess.run(
        [sys.executable, "scripts/readme_help.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_anchors_follow_githubs_rules():
    assert github_anchor("Evaluation/Inference") == "evaluationinference"
    assert github_anchor("Interruptions, resuming and bad data") == "interruptions-resuming-and-bad-data"
    assert (
        github_anchor("Deployment: ONNX, TorchScript, INT8, torch.hub") == "deployment-onnx-torchscript-int8-torchhub"
    )


def test_the_layout_drawn_in_architecture_md_is_the_repositorys():
    drawing = re.search(r"## The layout\n\n```text\n(.*?)```", (ROOT / "docs/architecture.md").read_text(), re.DOTALL)
    names = set(re.findall(r"(?<![\w./-])([\w]+\.py|[\w]+/)(?=\s)", drawing.group(1)))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    top = {name.split("/")[0] + "/" if "/" in name else name for name in tracked}
    assert names == {name for name in top if name.endswith((".py", "/")) and not name.startswith(".")}
