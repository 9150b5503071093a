"""Figures from raw repetitions: per-contender summary, the targets, the machine, Markdown and JSON output.

Definitions (also in bench/README.md):
* MB/s = logical bytes / 10^6 / wall seconds, median over the successful repetitions;
* CPU = user + system seconds of the client process tree per GiB (2^30) of logical data, median;
* peak RSS = the largest over the repetitions (MiB = 2^20 bytes);
* "transferd ×" = transferd's MB/s divided by this row's (same phase): how many times faster transferd is.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

MB = 1_000_000
GIB = 1024**3
MIB = 1024**2

UPLOAD_VS_GENCOVE = 2.0
UPLOAD_VS_FASTEST_RAW = 1.0
DOWNLOAD_VS_GENCOVE = 1.5
CPU_PER_GIB_MAX = 2.0
RSS_MAX_MIB = 200.0
# Low-pass and WAN targets (issue 15), judged on working time: gencove's wall minus its fixed 10 s sleep.
LOWPASS_VS_GENCOVE = 1.25
LOWPASS_VS_S5CMD = 1.0
GENCOVE_REQUESTS_PER_OBJECT = 2.0  # issue 15's measurement; used when gencove was not measured in this run
REQUESTS_PER_RUN_ALLOWANCE = 16  # the "O(1) per run" on top of gencove's per-object requests
WAN_VS_GENCOVE = 5.0
SCENARIO_TITLES = {
    "standard": "Standard",
    "lowpass": "Low-pass (loopback)",
    "wan-lowpass": "WAN: low-pass",
    "wan-standard": "WAN: standard run",
}


@dataclass
class RepRecord:
    key: str
    label: str
    phase: str
    rep: int
    ok: bool
    logical_bytes: int
    wall_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    peak_rss_bytes: int = 0
    exit_code: int = 0
    fixed_sleep_s: float = 0.0
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    error: str = ""
    log: str = ""
    load_before: float = 0.0  # 1-minute load average just before the command (other work on the machine)
    scenario: str = "standard"
    objects: int = 0  # objects the command uploads (requests per object divide by this)
    api_requests: dict[str, int] | None = None  # Gencove API requests by endpoint (None: not counted)
    s3_requests: dict[str, int] | None = None  # S3 requests by "Operation user-agent" (None: not counted)
    api_idle_gap_s: float = 0.0  # longest pause between API requests (gencove: its fixed sleep, measured)

    @property
    def mb_s(self) -> float:
        return self.logical_bytes / MB / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def transfer_only_mb_s(self) -> float:
        wall = self.wall_s - self.fixed_sleep_s
        return self.logical_bytes / MB / wall if wall > 0 else 0.0

    @property
    def cpu_s_per_gib(self) -> float:
        return (self.user_s + self.sys_s) / (self.logical_bytes / GIB) if self.logical_bytes else 0.0

    @property
    def working_s(self) -> float:
        """Wall time minus the command's built-in fixed sleep."""
        return self.wall_s - self.fixed_sleep_s

    @property
    def requests(self) -> int | None:
        if self.api_requests is None or self.s3_requests is None:
            return None
        return sum(self.api_requests.values()) + sum(self.s3_requests.values())

    @property
    def requests_per_object(self) -> float | None:
        total = self.requests
        return total / self.objects if total is not None and self.objects else None


@dataclass
class Summary:
    key: str
    label: str
    phase: str
    reps: int
    reps_ok: int
    logical_bytes: int
    mb_s: float | None
    mb_s_all: list[float]
    transfer_only_mb_s: float | None  # only for commands with a built-in fixed sleep
    fixed_sleep_s: float
    wall_s: float | None
    cpu_s_per_gib: float | None
    peak_rss_mib: float | None
    server_cpu_s: dict[str, float]
    transferd_x: float | None = None  # transferd MB/s / this MB/s (same phase)
    errors: list[str] = field(default_factory=list)
    scenario: str = "standard"
    objects: int = 0
    working_s: float | None = None  # wall minus the built-in fixed sleep, median
    requests: float | None = None  # API + S3 requests per repetition, median
    requests_per_object: float | None = None
    api_per_object: float | None = None
    s3_per_object: float | None = None
    request_breakdown: dict[str, int] = field(default_factory=dict)  # of the median repetition: "api endpoint"/"s3 op"
    api_idle_gap_s: float | None = None  # longest pause between API requests, median


@dataclass
class TargetCheck:
    name: str
    required: str
    measured: str
    holds: bool | None  # None: not measured


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_rep(reps: list[RepRecord]) -> RepRecord | None:
    counted = sorted((r for r in reps if r.requests is not None), key=lambda r: r.requests or 0)
    return counted[(len(counted) - 1) // 2] if counted else None


def _breakdown(rep: RepRecord | None) -> dict[str, int]:
    if rep is None:
        return {}
    out = {f"API {k}": n for k, n in sorted((rep.api_requests or {}).items(), key=lambda kv: -kv[1])}
    out |= {f"S3 {k}": n for k, n in sorted((rep.s3_requests or {}).items(), key=lambda kv: -kv[1])}
    return out


def _per_object(reps: list[RepRecord], part: str) -> float | None:
    counts = [(getattr(r, part), r.objects) for r in reps]
    return _median([sum(c.values()) / n for c, n in counts if c is not None and n])


def summarize(records: list[RepRecord]) -> list[Summary]:
    groups = list(dict.fromkeys((r.scenario, r.key) for r in records))
    out: list[Summary] = []
    for scenario, key in groups:
        rows = [r for r in records if r.key == key and r.scenario == scenario]
        ok = [r for r in rows if r.ok]
        servers = sorted({name for r in ok for name in r.server_cpu_s})
        fixed = max((r.fixed_sleep_s for r in rows), default=0.0)
        counted = [r for r in ok if r.requests is not None]
        out.append(
            Summary(
                key=key,
                label=rows[0].label,
                phase=rows[0].phase,
                reps=len(rows),
                reps_ok=len(ok),
                logical_bytes=rows[0].logical_bytes,
                mb_s=_median([r.mb_s for r in ok]),
                mb_s_all=[round(r.mb_s, 1) for r in ok],
                transfer_only_mb_s=_median([r.transfer_only_mb_s for r in ok]) if fixed else None,
                fixed_sleep_s=fixed,
                wall_s=_median([r.wall_s for r in ok]),
                cpu_s_per_gib=_median([r.cpu_s_per_gib for r in ok]),
                peak_rss_mib=max((r.peak_rss_bytes / MIB for r in ok), default=None),
                server_cpu_s={s: statistics.median(r.server_cpu_s.get(s, 0.0) for r in ok) for s in servers},
                errors=[f"rep {r.rep}: {r.error}" for r in rows if not r.ok],
                scenario=scenario,
                objects=rows[0].objects,
                working_s=_median([r.working_s for r in ok]),
                requests=_median([float(r.requests or 0) for r in counted]),
                requests_per_object=_median([r.requests_per_object or 0.0 for r in counted if r.objects]),
                api_per_object=_per_object(counted, "api_requests"),
                s3_per_object=_per_object(counted, "s3_requests"),
                request_breakdown=_breakdown(_median_rep(counted)),
                api_idle_gap_s=_median([r.api_idle_gap_s for r in counted]),
            )
        )
    refs = {"upload": "transferd-upload", "download": "transferd-download", "ceiling": "transferd-ceiling"}
    by_key = {(s.scenario, s.key): s for s in out}
    for s in out:
        ref = by_key.get((s.scenario, refs.get(s.phase, "")))
        if ref is not None and ref.mb_s and s.mb_s:
            s.transferd_x = ref.mb_s / s.mb_s
    return out


def check_targets(summaries: list[Summary]) -> list[TargetCheck]:
    """The standard run's targets, then those of the low-pass and WAN scenarios that were run."""
    standard = [s for s in summaries if s.scenario == "standard"]
    checks = _standard_checks(standard) if standard or not summaries else []
    scenarios = {s.scenario for s in summaries}
    if "lowpass" in scenarios:
        checks += lowpass_checks([s for s in summaries if s.scenario == "lowpass"])
    for scenario in ("wan-lowpass", "wan-standard"):
        if scenario in scenarios:
            checks.append(wan_check(scenario, [s for s in summaries if s.scenario == scenario]))
    return checks


def _vs_gencove_working(name: str, required: float, by: dict[str, Summary]) -> TargetCheck:
    """transferd's wall time against the gencove CLI's working time (its wall minus the fixed sleep)."""
    up, gen = by.get("transferd-upload"), by.get("gencove-upload")
    if not (up and gen and up.wall_s and gen.working_s):
        return TargetCheck(name, f">= {required:.2f}x", "not measured", None)
    ratio = gen.working_s / up.wall_s
    measured = (
        f"{ratio:.2f}x (transferd {up.wall_s:.1f} s wall vs gencove {gen.working_s:.1f} s working, "
        f"{gen.wall_s or 0:.1f} s wall incl. its {gen.fixed_sleep_s:.0f} s sleep)"
    )
    return TargetCheck(name, f">= {required:.2f}x", measured, ratio >= required)


def lowpass_checks(summaries: list[Summary]) -> list[TargetCheck]:
    by = {s.key: s for s in summaries}
    checks = [_vs_gencove_working("low-pass: upload vs gencove CLI working time", LOWPASS_VS_GENCOVE, by)]
    up, s5 = by.get("transferd-upload"), by.get("s5cmd-upload")
    if up and s5 and up.wall_s and s5.wall_s:
        ratio = s5.wall_s / up.wall_s
        measured = f"{ratio:.2f}x (transferd {up.wall_s:.1f} s vs s5cmd {s5.wall_s:.1f} s wall)"
        checks.append(TargetCheck("low-pass: upload vs s5cmd", f">= {LOWPASS_VS_S5CMD:.1f}x", measured, ratio >= 1.0))
    else:
        checks.append(TargetCheck("low-pass: upload vs s5cmd", f">= {LOWPASS_VS_S5CMD:.1f}x", "not measured", None))
    gen = by.get("gencove-upload")
    rpo_ref = gen.requests_per_object if gen and gen.requests_per_object else None
    required = (
        f"<= gencove's per object ({'measured' if rpo_ref else f'{GENCOVE_REQUESTS_PER_OBJECT:.1f}, issue 15'}) "
        f"x objects + {REQUESTS_PER_RUN_ALLOWANCE} per run"
    )
    name = "low-pass: requests per object (API + S3)"
    if up and up.requests is not None and up.objects:
        per_object = rpo_ref or GENCOVE_REQUESTS_PER_OBJECT
        allowed = per_object * up.objects + REQUESTS_PER_RUN_ALLOWANCE
        measured = (
            f"transferd {up.requests:.0f} requests = {up.requests_per_object:.2f}/object "
            f"({up.api_per_object:.2f} API + {up.s3_per_object:.2f} S3); allowed {per_object:.2f} x {up.objects} "
            f"+ {REQUESTS_PER_RUN_ALLOWANCE} = {allowed:.0f}"
        )
        checks.append(TargetCheck(name, required, measured, up.requests <= allowed))
    else:
        checks.append(TargetCheck(name, required, "not measured", None))
    return checks


def wan_check(scenario: str, summaries: list[Summary]) -> TargetCheck:
    title = SCENARIO_TITLES.get(scenario, scenario)
    by = {s.key: s for s in summaries}
    return _vs_gencove_working(f"{title}: upload vs gencove CLI working time", WAN_VS_GENCOVE, by)


def _standard_checks(summaries: list[Summary]) -> list[TargetCheck]:
    by = {s.key: s for s in summaries}

    def mbs(key: str) -> float | None:
        s = by.get(key)
        return s.mb_s if s else None

    checks: list[TargetCheck] = []
    up, gen = mbs("transferd-upload"), mbs("gencove-upload")
    if up and gen:
        ratio = up / gen
        gen_only = by["gencove-upload"].transfer_only_mb_s or gen
        checks.append(
            TargetCheck(
                "upload vs gencove CLI (wall, as the user waits)",
                f">= {UPLOAD_VS_GENCOVE:.1f}x",
                f"{ratio:.2f}x ({up:.0f} vs {gen:.0f} MB/s); vs its transfer only "
                f"(excl. the {by['gencove-upload'].fixed_sleep_s:.0f} s sleep): {up / gen_only:.2f}x",
                ratio >= UPLOAD_VS_GENCOVE,
            )
        )
    else:
        checks.append(TargetCheck("upload vs gencove CLI (wall)", f">= {UPLOAD_VS_GENCOVE:.1f}x", "not measured", None))
    raw = [(k, v) for k in ("awscli-upload", "s5cmd-upload") if (v := mbs(k))]
    if up and raw:
        name, fastest = max(raw, key=lambda kv: kv[1])
        ratio = up / fastest
        checks.append(
            TargetCheck(
                "upload vs the faster of awscli / s5cmd",
                f">= {UPLOAD_VS_FASTEST_RAW:.1f}x",
                f"{ratio:.2f}x ({up:.0f} vs {name.split('-')[0]} {fastest:.0f} MB/s)",
                ratio >= UPLOAD_VS_FASTEST_RAW,
            )
        )
    else:
        checks.append(TargetCheck("upload vs the faster of awscli / s5cmd", ">= 1.0x", "not measured", None))
    down, gdown = mbs("transferd-download"), mbs("gencove-download")
    if down and gdown:
        ratio = down / gdown
        checks.append(
            TargetCheck(
                "download vs gencove download",
                f">= {DOWNLOAD_VS_GENCOVE:.1f}x",
                f"{ratio:.2f}x ({down:.0f} vs {gdown:.0f} MB/s)",
                ratio >= DOWNLOAD_VS_GENCOVE,
            )
        )
    else:
        checks.append(TargetCheck("download vs gencove download", ">= 1.5x", "not measured", None))
    cpu_rows = [by[k] for k in ("transferd-upload", "transferd-ceiling") if k in by and by[k].cpu_s_per_gib]
    if cpu_rows:
        worst = max(cpu_rows, key=lambda s: s.cpu_s_per_gib or 0.0)
        text = ", ".join(f"{s.key}: {s.cpu_s_per_gib:.2f}" for s in cpu_rows)
        checks.append(
            TargetCheck(
                "client CPU per GiB uploaded",
                f"<= {CPU_PER_GIB_MAX:.1f} core-s/GiB",
                text,
                (worst.cpu_s_per_gib or 0.0) <= CPU_PER_GIB_MAX,
            )
        )
    else:
        checks.append(TargetCheck("client CPU per GiB uploaded", "<= 2.0 core-s/GiB", "not measured", None))
    rss_rows = [by[k] for k in ("transferd-upload", "transferd-download", "transferd-ceiling") if k in by]
    rss_rows = [s for s in rss_rows if s.peak_rss_mib]
    if rss_rows:
        worst_rss = max(s.peak_rss_mib or 0.0 for s in rss_rows)
        text = ", ".join(f"{s.key}: {s.peak_rss_mib:.0f} MiB" for s in rss_rows)
        checks.append(
            TargetCheck("client peak RSS (transferd)", f"<= {RSS_MAX_MIB:.0f} MiB", text, worst_rss <= RSS_MAX_MIB)
        )
    else:
        checks.append(TargetCheck("client peak RSS (transferd)", "<= 200 MiB", "not measured", None))
    return checks


# -- machine -----------------------------------------------------------------------------------------------------
def _meminfo_total_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return 0.0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(_meminfo_total_gib(), 1),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "event_loop": os.environ.get("TRANSFERD_EVENT_LOOP", "asyncio") or "asyncio",
    }


# -- output ------------------------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def _standard_table(cfg: dict[str, Any], summaries: list[Summary]) -> list[str]:
    lines = [
        f"Data: synthetic run of {cfg['files']} gzip FASTQs ({cfg['samples']} samples x {cfg['lanes']} lanes x R1/R2), "
        f"{cfg['logical_bytes'] / MB:,.1f} MB ({cfg['logical_bytes'] / GIB:.2f} GiB) in total; "
        f"{cfg['reps']} repetition(s) per contender, interleaved; S3 server: {cfg['s3_server']}.",
        "",
        "| contender | phase | MB/s (median) | per rep | transferd × | client CPU s/GiB | client peak RSS MiB "
        "| server CPU s (median) | requests / object | ok |",
        "|---|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for s in summaries:
        mb = _fmt(s.mb_s)
        if s.transfer_only_mb_s is not None:
            mb += f" (transfer only, excl. the fixed {s.fixed_sleep_s:.0f} s sleep: {s.transfer_only_mb_s:.1f})"
        server = ", ".join(f"{k} {v:.1f}" for k, v in s.server_cpu_s.items()) or "—"
        lines.append(
            f"| {s.label} | {s.phase} | {mb} | {', '.join(str(v) for v in s.mb_s_all) or '—'} "
            f"| {_fmt(s.transferd_x, '.2f', 'x')} | {_fmt(s.cpu_s_per_gib, '.2f')} | {_fmt(s.peak_rss_mib, '.0f')} "
            f"| {server} | {_fmt(s.requests_per_object, '.2f')} | {s.reps_ok}/{s.reps} |"
        )
    return lines


def _scenario_table(name: str, info: dict[str, Any], summaries: list[Summary]) -> list[str]:
    """A low-pass or WAN section: times, working time, requests per object and what they were."""
    delay, path = "", "every client talks to s3rver directly"
    if info.get("delay_ms"):
        delay = f"; {info['delay_ms']:g} ms added each way to the API and to S3 (bench/wan_proxy.py)"
        path = "every client goes through the same delaying proxies to them"
    lines = [
        "",
        f"## {SCENARIO_TITLES.get(name, name)}",
        "",
        f"Data: {info['files']} gzip FASTQs ({info['samples']} samples x {info['lanes']} lane(s) x R1/R2), "
        f"{info['logical_bytes'] / MB:,.1f} MB{delay}. Requests counted on the servers: API from the sandbox's "
        f"request log, S3 by s3rver itself ({path}). Working time: wall minus the command's fixed sleep "
        "(gencove: 10 s); longest API pause: the longest time with no API request in flight.",
        "",
        "| contender | wall s (median) | working s (excl. fixed sleep) | MB/s | transferd × (working time) "
        "| requests / object (API + S3) | requests of the median rep | longest API pause s | ok |",
        "|---|---:|---:|---:|---:|---|---|---:|---:|",
    ]
    ref = next((s for s in summaries if s.key == "transferd-upload"), None)
    for s in summaries:
        x = s.working_s / ref.wall_s if ref and ref.wall_s and s.working_s else None
        rpo = "—"
        if s.requests_per_object is not None:
            rpo = f"{s.requests_per_object:.2f} ({_fmt(s.api_per_object, '.2f')} + {_fmt(s.s3_per_object, '.2f')})"
        breakdown = ", ".join(f"{k} {n}" for k, n in s.request_breakdown.items()) or "—"
        lines.append(
            f"| {s.label} | {_fmt(s.wall_s)} | {_fmt(s.working_s)} | {_fmt(s.mb_s)} | {_fmt(x, '.2f', 'x')} "
            f"| {rpo} | {breakdown} | {_fmt(s.api_idle_gap_s)} | {s.reps_ok}/{s.reps} |"
        )
    return lines


def render_markdown(meta: dict[str, Any], summaries: list[Summary], checks: list[TargetCheck]) -> str:
    lines = [f"# transferd benchmark, {meta['started']}", ""]
    cfg = meta["config"]
    standard = [s for s in summaries if s.scenario == "standard"]
    if standard or not summaries:
        lines += _standard_table(cfg, standard)
    for name, info in meta.get("scenarios", {}).items():
        rows = [s for s in summaries if s.scenario == name]
        if rows:
            lines += _scenario_table(name, info, rows)
    lines += ["", "## Targets", "", "| target | required | measured | holds |", "|---|---|---|---|"]
    for c in checks:
        verdict = "not measured" if c.holds is None else ("yes" if c.holds else "**no**")
        lines.append(f"| {c.name} | {c.required} | {c.measured} | {verdict} |")
    errors = [(s.label, e) for s in summaries for e in s.errors]
    if errors:
        lines += ["", "## Failed repetitions", ""]
        lines += [f"* {label}: {err}" for label, err in errors]
    skipped = {**cfg.get("skipped", {}), **{f"suite {i + 1}": e for i, e in enumerate(cfg.get("suite_errors", []))}}
    if skipped:
        lines += ["", "## Not measured", ""]
        lines += [f"* {key}: {reason}" for key, reason in skipped.items()]
    m = meta["machine"]
    lines += [
        "",
        "## Machine and versions",
        "",
        f"* {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, kernel {m['kernel']}; "
        f"load average at start {m['loadavg_at_start']}, at end {m.get('loadavg_at_end', '?')}; "
        f"transferd on Python {m.get('python', '?')}, event loop {m.get('event_loop', 'asyncio')}",
        "* " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        *(
            [f"* transferd ran with `--config`: `{' '.join(cfg['transferd_config'].split())}`"]
            if cfg.get("transferd_config")
            else []
        ),
        "",
        "MB/s = logical bytes / 10^6 / wall seconds (process start to exit). CPU = user+sys of the client process "
        "tree (wait4). Peak RSS = max over reps of the larger of ru_maxrss and the summed VmRSS of the process tree. "
        "transferd × = transferd's MB/s ÷ this row's. Server CPU = CPU seconds the S3 server / sandbox processes "
        "used during the run. See bench/README.md.",
        "",
    ]
    return "\n".join(lines)


def write_results(
    results_dir: Path,
    meta: dict[str, Any],
    records: list[RepRecord],
    summaries: list[Summary],
    checks: list[TargetCheck],
) -> tuple[Path, Path]:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(meta["started"]).strftime("%Y%m%d-%H%M%S")
    doc = {
        **meta,
        "summaries": [asdict(s) for s in summaries],
        "targets": [asdict(c) for c in checks],
        "repetitions": [asdict(r) | {"mb_s": r.mb_s, "cpu_s_per_gib": r.cpu_s_per_gib} for r in records],
    }
    text_json = json.dumps(doc, indent=2) + "\n"
    text_md = render_markdown(meta, summaries, checks)
    md_path, json_path = results_dir / f"{stamp}.md", results_dir / f"{stamp}.json"
    for path, text in ((md_path, text_md), (json_path, text_json)):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    for name, text in (("latest.md", text_md), ("latest.json", text_json)):
        tmp = results_dir / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, results_dir / name)
    return md_path, json_path
