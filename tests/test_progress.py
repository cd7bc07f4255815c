"""Progress off a terminal: whole lines at most every LOG_EVERY seconds with counts and an estimate, never the
carriage returns of a tqdm bar; a bar on a terminal."""
from __future__ import annotations

import io

from tqdm import tqdm

from certprune.cli.main import main
from certprune.progress import LogLines, ProgressBars, progress_bar
from tests.conftest import REPO


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_written_at_most_every_period_with_an_estimate():
    stream, clock = io.StringIO(), Clock()
    bar = LogLines(10, "sample", "robust", 0, stream, every=30.0, clock=clock)
    for second in (1, 2, 31, 32, 70):
        clock.now = second
        bar.update(1)
    bar.set_postfix(certified=4, falsified=1)
    bar.close()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines == ["robust: 3/10 samples (30%), 31 s, about 72 s left",
                     "robust: 5/10 samples (50%), 70 s, about 70 s left",
                     "robust: 5/10 samples (50%), 70 s, about 70 s left; certified 4, falsified 1"]


def test_a_resumed_run_estimates_from_the_new_items_only_and_a_silent_bar_writes_nothing():
    stream, clock = io.StringIO(), Clock()
    bar = LogLines(100, "partition", None, 90, stream, every=1.0, clock=clock)
    clock.now = 5
    bar.update(5)
    assert stream.getvalue() == "95/100 partitions (95%), 5 s, about 5 s left\n"
    quiet = progress_bar(10, "item", stream=stream, enabled=False)
    quiet.update(10)
    quiet.close()
    assert stream.getvalue().count("\n") == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_tqdm_bar_and_a_log_gets_lines():
    assert isinstance(progress_bar(3, "item", stream=Terminal()), tqdm)
    assert isinstance(progress_bar(3, "item", stream=io.StringIO()), LogLines)
    bars = ProgressBars(enabled=True)
    bars.update("check", 2, 4)
    assert bars.bars["check"].n == 2


def test_certify_in_a_log_ends_with_one_progress_line_and_no_carriage_return(capsys):
    model = str(REPO / "models" / "mnist_mlp_100x2.onnx")
    assert main(["certify", model, "--eps", "0.01", "-n", "2"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "2/2 samples (100%)" in err
