"""Planning: a sample that is only settling is not submitted (never recorded as failed); a real problem is."""

from pathlib import Path

from transferd.discovery.models import Sample, SourceFile
from transferd.upload.plan import plan_sample


def _sample(ready: bool, problems: tuple[str, ...], settling: bool) -> Sample:
    f = SourceFile(Path("/runs/r/A_S1_L001_R1_001.fastq.gz"), 10, 0, 1)
    return Sample(Path("/runs/r"), "r", None, "A", "A", (f,), (), ready, problems, settling=settling)


def test_settling_sample_waits() -> None:
    assert plan_sample(_sample(False, ("not settled: x changed 1s ago",), True), "gncv://d/r", None, None) is None


def test_lasting_problem_is_recorded_as_failed() -> None:
    plan = plan_sample(_sample(False, ("x: truncated gzip",), False), "gncv://d/r", None, None)
    assert plan is not None and plan.problems and not plan.objects


def test_ready_sample_gets_objects() -> None:
    plan = plan_sample(_sample(True, (), False), "gncv://d/r", "p", None)
    assert plan is not None and [o.read for o in plan.objects] == ["R1"] and not plan.problems
