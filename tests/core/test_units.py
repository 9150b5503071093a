import pytest

from transferd.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), (120, 120), ("2.5s", 2.5), ("1d", 86400), ("7", 7)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten", "5 minutes", "-3s", "3x", "s", True, -1])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "n"),
    [
        ("64MiB", 64 * 1024**2), ("8 MB", 8_000_000), ("1.5GiB", 1536 * 1024**2), (4096, 4096), ("10", 10),
        ("1kib", 1024),
    ],
)
def test_sizes(text: str | int, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "lots", "5 XB", "MiB", -5, False])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)  # type: ignore[arg-type]


def test_format_size() -> None:
    assert format_size(1536) == "1.5 KiB"
    assert format_size(10) == "10 B"
