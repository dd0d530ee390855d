#!/usr/bin/env bash
# The console's own CPU cost against a live 500-site campaign: runs `vaxcamp demo` (500 sites,
# generated traffic) in the background, opens `vaxcamp console` on its server in a detached tmux
# window, and reads the console's utime+stime from /proc over a minute.
#
#   bash console/measure-cpu.sh                 # 500 sites, 60 s, a 200x60 window
#   SITES=500 SECONDS_MEASURED=60 COLS=80 ROWS=24 bash console/measure-cpu.sh
#
# Needs tmux and a release build (`cargo build --release`); BIN overrides the binary. The console
# uses the demo's observer token (read-only), and the minute is measured from the moment it
# shows "● live".
set -euo pipefail
cd "$(dirname "$0")/.."

SITES=${SITES:-500}
SECONDS_MEASURED=${SECONDS_MEASURED:-60}
COLS=${COLS:-200}
ROWS=${ROWS:-60}
RATE=${RATE:-500}
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/vaxcamp}
OUT=$(mktemp -d)
SOCKET="vaxcamp-measure-$$"

demo_pid=""
cleanup() {
    tmux -L "$SOCKET" kill-server 2>/dev/null || true
    if [[ -n "$demo_pid" ]]; then kill "$demo_pid" 2>/dev/null || true; wait "$demo_pid" 2>/dev/null || true; fi
    rm -rf "$OUT"
}
trap cleanup EXIT

"$BIN" demo --sites "$SITES" --people 100000 --rate "$RATE" \
    --duration "$((SECONDS_MEASURED + 60))s" --out "$OUT" >"$OUT.log" 2>&1 &
demo_pid=$!

# The demo writes campaign.json and its observer token once its server listens.
for _ in $(seq 1 600); do [[ -s "$OUT/observer-token" ]] && break; sleep 0.5; done
[[ -s "$OUT/observer-token" ]] || { echo "the demo did not start: $(tail -5 "$OUT.log")"; exit 1; }
server=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["server"])' "$OUT/campaign.json")
# The steering committee's read-only token, as a real console would use.
token=$(cat "$OUT/observer-token")

bytes=$(python3 -c 'import sys, urllib.request as u
r = u.Request(sys.argv[1] + "/v1/live", headers={"Authorization": "Bearer " + sys.argv[2]})
print(len(u.urlopen(r).read()))' "$server" "$token")
tmux -L "$SOCKET" -f /dev/null new-session -d -s measure -x "$COLS" -y "$ROWS" \
    "VAXCAMP_TOKEN=$token exec $BIN console --server $server"
console_pid=$(tmux -L "$SOCKET" display-message -p -t measure '#{pane_pid}')

ticks() { awk '{print $14 + $15}' "/proc/$console_pid/stat"; }
# Measure from the moment the console shows live figures (at most 60 s to get there).
for _ in $(seq 1 600); do
    tmux -L "$SOCKET" capture-pane -p -t measure | grep -q '● live' && break
    sleep 0.1
done
tmux -L "$SOCKET" capture-pane -p -t measure | grep -q '● live' \
    || { echo "the console did not come up live:"; tmux -L "$SOCKET" capture-pane -p -t measure; exit 1; }
start_ticks=$(ticks); start_ns=$(date +%s%N)
sleep "$SECONDS_MEASURED"
end_ticks=$(ticks); end_ns=$(date +%s%N)
hz=$(getconf CLK_TCK)
python3 - "$start_ticks" "$end_ticks" "$start_ns" "$end_ns" "$hz" "$SITES" "$COLS" "$ROWS" "$bytes" <<'EOF'
import sys
t0, t1, n0, n1, hz, sites, cols, rows, size = map(int, sys.argv[1:])
cpu = (t1 - t0) / hz
wall = (n1 - n0) / 1e9
print(f"console CPU: {cpu:.2f} s over {wall:.1f} s = {100 * cpu / wall:.2f}% of one core "
      f"({sites} sites, {cols}x{rows}, one snapshot of {size} bytes a second)")
EOF
tmux -L "$SOCKET" capture-pane -p -t measure | head -"$ROWS"
