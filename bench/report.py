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


@dataclass
class TargetCheck:
    name: str
    required: str
    measured: str
    holds: bool | None  # None: not measured


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(records: list[RepRecord]) -> list[Summary]:
    keys = list(dict.fromkeys(r.key for r in records))
    out: list[Summary] = []
    for key in keys:
        rows = [r for r in records if r.key == key]
        ok = [r for r in rows if r.ok]
        servers = sorted({name for r in ok for name in r.server_cpu_s})
        fixed = max((r.fixed_sleep_s for r in rows), default=0.0)
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
            )
        )
    refs = {"upload": "transferd-upload", "download": "transferd-download", "ceiling": "transferd-ceiling"}
    by_key = {s.key: s for s in out}
    for s in out:
        ref = by_key.get(refs.get(s.phase, ""))
        if ref is not None and ref.mb_s and s.mb_s:
            s.transferd_x = ref.mb_s / s.mb_s
    return out


def check_targets(summaries: list[Summary]) -> list[TargetCheck]:
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


def render_markdown(meta: dict[str, Any], summaries: list[Summary], checks: list[TargetCheck]) -> str:
    lines = [f"# transferd benchmark, {meta['started']}", ""]
    cfg = meta["config"]
    lines += [
        f"Data: synthetic run of {cfg['files']} gzip FASTQs ({cfg['samples']} samples x {cfg['lanes']} lanes x R1/R2), "
        f"{cfg['logical_bytes'] / MB:,.1f} MB ({cfg['logical_bytes'] / GIB:.2f} GiB) in total; "
        f"{cfg['reps']} repetition(s) per contender, interleaved; S3 server: {cfg['s3_server']}.",
        "",
        "| contender | phase | MB/s (median) | per rep | transferd × | client CPU s/GiB | client peak RSS MiB "
        "| server CPU s (median) | ok |",
        "|---|---|---:|---|---:|---:|---:|---|---:|",
    ]
    for s in summaries:
        mb = _fmt(s.mb_s)
        if s.transfer_only_mb_s is not None:
            mb += f" (transfer only, excl. the fixed {s.fixed_sleep_s:.0f} s sleep: {s.transfer_only_mb_s:.1f})"
        server = ", ".join(f"{k} {v:.1f}" for k, v in s.server_cpu_s.items()) or "—"
        lines.append(
            f"| {s.label} | {s.phase} | {mb} | {', '.join(str(v) for v in s.mb_s_all) or '—'} "
            f"| {_fmt(s.transferd_x, '.2f', 'x')} | {_fmt(s.cpu_s_per_gib, '.2f')} | {_fmt(s.peak_rss_mib, '.0f')} "
            f"| {server} | {s.reps_ok}/{s.reps} |"
        )
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
