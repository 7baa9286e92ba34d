"""The Jetson CI workflow refers to gate files that exist and runs the gated benchmark."""

from __future__ import annotations

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKFLOW = os.path.join(REPO, ".github", "workflows", "jetson-bench.yml")


def test_workflow_gates_exist_and_match_the_power_matrix():
    with open(WORKFLOW) as f:
        text = f.read()
    assert "self-hosted" in text and "nano-build" in text
    powers = re.search(r"power:\s*\[([^\]]*)\]", text).group(1)
    budgets = [p.strip().strip("\"'") for p in powers.split(",")]
    assert budgets == ["15w", "30w"]
    assert '--gate "benchmarks/gates/agx-xavier-${{ matrix.power }}.json"' in text
    for b in budgets:
        assert os.path.isfile(os.path.join(REPO, "benchmarks", "gates", f"agx-xavier-{b}.json"))
    assert "\t" not in text  # YAML forbids tabs for indentation


def test_workflow_exports_at_the_papers_input_size():
    """The demo weights record 160 px; the gated benchmark compares with the paper's 416x416 numbers."""
    with open(WORKFLOW) as f:
        export = [line for line in f if "nano-export" in line and "-o " in line]
    assert len(export) == 1 and "--size 416" in export[0]


def test_workflow_puts_the_board_back_even_after_a_cancelled_job():
    """A cancelled job kills nano-bench mid-run; the always() step restores from the state it recorded."""
    with open(WORKFLOW) as f:
        text = f.read()
    step = text[text.index("Put the board back") :]
    assert step.splitlines()[1].strip() == "if: always()" and "nano-bench --restore" in step.splitlines()[2]
    assert "install -d -m 0775" in text and "/var/lib/yolo-nano" in text  # the runner setup names the folder
