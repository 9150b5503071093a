"""transferd/progress.py: the generic terminal progress bar."""

from __future__ import annotations

import io

from transferd.progress import Progress, human_duration
from transferd.units import format_size


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_silent_when_not_a_terminal_or_disabled() -> None:
    plain = io.StringIO()
    with Progress(100, "upload", stream=plain) as bar:
        bar.advance(100)
    assert plain.getvalue() == "" and bar.done == 100
    tty = FakeTTY()
    with Progress(100, stream=tty, enabled=False) as bar:
        bar.advance(50)
    assert tty.getvalue() == ""


def test_draws_on_a_terminal_at_most_ten_times_a_second_and_ends_with_a_summary() -> None:
    tty = FakeTTY()
    bar = Progress(10 * 1024**2, "upload", stream=tty)
    for _ in range(1000):
        bar.advance(1024)  # a burst far faster than the redraw interval
    assert tty.getvalue().count("\r") == 1
    bar.close()
    bar.close()  # idempotent
    out = tty.getvalue()
    assert out.endswith("\n") and out.count("\r") == 2
    final = out.rstrip("\n").rsplit("\r", 1)[1]
    assert final.startswith("upload ") and "1000.0 KiB / 10.0 MiB" in final and " in 0:00" in final


def test_render_shows_percent_bar_rate_and_eta() -> None:
    bar = Progress(1000, "x", stream=io.StringIO())
    bar.done = 250
    line = bar.render(bar._started + 10.0, width=80)
    assert line.startswith("x  25% [") and "250 B / 1000 B" in line and "25 B/s" in line and "ETA 0:30" in line
    assert len(line) <= 79
    assert "[" not in bar.render(bar._started + 10.0, width=30)  # too narrow for a bar: numbers only


def test_units() -> None:
    assert format_size(512) == "512 B" and format_size(1536) == "1.5 KiB" and format_size(3 * 1024**4) == "3.0 TiB"
    assert human_duration(59) == "0:59" and human_duration(3725) == "1:02:05"
