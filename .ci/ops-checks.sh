#!/usr/bin/env bash
# Offline checks of the operational artefacts (tech-notes §6.3, §7):
#   systemd/transferd.service  systemd-analyze verify (no output allowed) + security --offline (exposure <= 2.0)
#   /metrics                   promtool check metrics on a scrape of a real `transferd run`
#   monitoring/alerts.yml      promtool check rules + promtool test rules monitoring/alerts.test.yml
#   grafana-dashboard.json     every panel expr, as recording rules, through promtool check rules
# Installs systemd / prometheus (for promtool) with apt-get when missing and possible; otherwise says SKIP.
# Usage: bash .ci/ops-checks.sh   (from anywhere; PYTHON=... overrides the interpreter)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || command -v python3)}"
SECURITY_THRESHOLD=20 # exposure x 10: 2.0 is well inside "OK"; the unit measures 1.2
WORK="$(mktemp -d)"
DAEMON_PID=""
cleanup() {
    if [ -n "$DAEMON_PID" ]; then kill "$DAEMON_PID" 2>/dev/null || true; wait "$DAEMON_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
FAILED=0
fail() { echo "FAIL: $*"; FAILED=1; }
ok() { echo "ok:   $*"; }

APT_UPDATED=0
ensure() { # ensure COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "installing $2 (for $1) with apt-get ..."
        if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq >"$WORK/apt.log" 2>&1 || true; APT_UPDATED=1; fi
        # Only the tools are wanted: a temporary policy-rc.d stops the package from starting its server here.
        local guard=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && guard=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" \
            >>"$WORK/apt.log" 2>&1 || tail -5 "$WORK/apt.log"
        if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi
    fi
    command -v "$1" >/dev/null 2>&1
}

# -- systemd unit ------------------------------------------------------------------------------------------------
if ensure systemd-analyze systemd; then
    # verify fails on an ExecStart binary that does not exist: check a copy that runs this checkout's python.
    mkdir -p "$WORK/unit"
    sed "s|^ExecStart=/opt/transferd/bin/transferd |ExecStart=$(command -v python3) -m transferd |" \
        systemd/transferd.service >"$WORK/unit/transferd.service"
    grep -q "^ExecStart=$(command -v python3) -m transferd run" "$WORK/unit/transferd.service" \
        || fail "systemd/transferd.service: ExecStart is not /opt/transferd/bin/transferd run ... (update this script)"
    # Unknown keys and bad values only warn with rc 0 (systemd#11651): any output is a failure.
    if out="$(systemd-analyze verify --man=no "$WORK/unit/transferd.service" 2>&1)" && [ -z "$out" ]; then
        ok "systemd-analyze verify systemd/transferd.service"
    else
        fail "systemd-analyze verify systemd/transferd.service:"; echo "$out"
    fi
    if out="$(systemd-analyze security --offline=yes --threshold="$SECURITY_THRESHOLD" \
        "$WORK/unit/transferd.service" 2>&1)"; then
        ok "systemd-analyze security: $(echo "$out" | grep -o 'Overall exposure level.*')"
    else
        fail "systemd-analyze security (threshold $SECURITY_THRESHOLD):"; echo "$out" | tail -25
    fi
else
    echo "SKIP: systemd-analyze is not installed and cannot be installed here (apt-get install systemd)"
fi

# -- Prometheus: rules, dashboard queries, a real scrape -------------------------------------------------------------
if ! ensure promtool prometheus; then
    echo "SKIP: promtool is not installed and cannot be installed here (apt-get install prometheus)"
    exit "$FAILED"
fi

if out="$(promtool check rules --lint-fatal monitoring/alerts.yml 2>&1)"; then ok "promtool check rules monitoring/alerts.yml"
else fail "promtool check rules monitoring/alerts.yml"; echo "$out"; fi
if out="$(cd monitoring && promtool test rules alerts.test.yml 2>&1)"; then ok "promtool test rules monitoring/alerts.test.yml"
else fail "promtool test rules monitoring/alerts.test.yml"; echo "$out"; fi

# Every panel query as a recording rule: promtool parses each one (Grafana variables replaced).
"$PYTHON" - monitoring/grafana-dashboard.json >"$WORK/dashboard-rules.yml" <<'EOF'
import json, re, sys
doc = json.load(open(sys.argv[1]))
def panels(ps):
    for p in ps:
        yield p
        yield from panels(p.get("panels", []))
subs = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*", "$job": ".*"}
print("groups:\n  - name: grafana-dashboard\n    rules:")
for p in panels(doc["panels"]):
    for t in p.get("targets", []):
        expr = t["expr"]
        for k, v in subs.items():
            expr = expr.replace(k, v)
        if "$" in expr:
            sys.exit(f"panel {p['id']} {p['title']!r}: unknown Grafana variable in {t['expr']!r}")
        print(f"      - record: dashboard:panel_{p['id']}_{t['refId']}")
        print(f"        expr: {json.dumps(expr)}")
EOF
if out="$(promtool check rules --lint-fatal "$WORK/dashboard-rules.yml" 2>&1)"; then
    ok "promtool check rules on the dashboard's queries ($(grep -c 'record:' "$WORK/dashboard-rules.yml") exprs)"
else fail "promtool check rules on the dashboard's queries"; echo "$out"; fi

# A real scrape: start the daemon on a free loopback port with an empty config (no watches, no mirror; the API
# is unreachable, which /readyz reports but /metrics does not mind).
PORT="$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat >"$WORK/config.toml" <<EOF
[gencove]
host = "http://127.0.0.1:9"
[state]
path = "$WORK/state/journal.sqlite3"
[metrics]
listen = "127.0.0.1:$PORT"
EOF
TRANSFERD_API_KEY=ops-check-not-a-real-key "$PYTHON" -m transferd run -c "$WORK/config.toml" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
if "$PYTHON" - "$PORT" "$WORK/metrics.txt" "$DAEMON_PID" <<'EOF'
import os, sys, time, urllib.request
port, out, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
deadline = time.monotonic() + 60
while True:
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        open(out, "wb").write(body)
        break
    except OSError as e:
        if time.monotonic() > deadline or not os.path.exists(f"/proc/{pid}"):
            sys.exit(f"no /metrics from the daemon: {e}")
        time.sleep(0.2)
EOF
then
    if out="$(promtool check metrics <"$WORK/metrics.txt" 2>&1)" && [ -z "$out" ]; then
        ok "promtool check metrics on a real scrape ($(grep -c '^transferd_' "$WORK/metrics.txt") transferd samples)"
    else fail "promtool check metrics on a real scrape"; echo "$out"; fi
else
    fail "could not scrape a running daemon"; tail -20 "$WORK/daemon.log"
fi
kill -TERM "$DAEMON_PID" 2>/dev/null || true
if wait "$DAEMON_PID"; then ok "daemon exited 0 on SIGTERM"; else fail "daemon exit status $? on SIGTERM"; tail -20 "$WORK/daemon.log"; fi
DAEMON_PID=""

if [ "$FAILED" = 0 ]; then echo "ops-checks: all passed"; else echo "ops-checks: FAILED"; fi
exit "$FAILED"
