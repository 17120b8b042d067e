#!/usr/bin/env bash
# The demo: set up, start a 3-node `peerd dev` cluster, import Debian's /etc/crontab, run a
# webhook task every second against a local sink, show its runs, kill -9 the node that owns it
# and show the task moving to a survivor with no duplicate Idempotency-Key. Stops everything at
# the end (pass --keep to leave the cluster running).
set -euo pipefail
cd "$(dirname "$0")/.."
PEERD_DEMO=1 bash scripts/setup.sh
keep=0; [ "${1:-}" = "--keep" ] && keep=1

workdir=$(mktemp -d /tmp/peerd-demo.XXXXXX)
peerd=.venv/bin/peerd
export PEERD_SERVER=127.0.0.1:7070
SINK_PORT=${SINK_PORT:-8099}

cleanup() {
  [ "$keep" = 1 ] && return
  echo; echo "== stopping"
  [ -n "${dev_pid:-}" ] && kill -TERM "$dev_pid" 2>/dev/null && wait "$dev_pid" 2>/dev/null || true
  [ -n "${sink_pid:-}" ] && kill -TERM "$sink_pid" 2>/dev/null && wait "$sink_pid" 2>/dev/null || true
}
trap cleanup EXIT

echo "== peerd dev --nodes 3 (logs in $workdir)"
$peerd dev --nodes 3 --allow-shell '/bin/sh -c *' --data-dir "$workdir" > "$workdir/dev.out" 2>&1 &
dev_pid=$!
for _ in $(seq 1 100); do
  grep -q "ready" "$workdir/dev.out" 2>/dev/null && break
  kill -0 "$dev_pid" 2>/dev/null || { cat "$workdir/dev.out"; exit 1; }
  sleep 0.3
done
cat "$workdir/dev.out"
$peerd cluster

echo; echo "== webhook sink on 127.0.0.1:$SINK_PORT"
.venv/bin/python -m peerd.devtools.sink --listen "127.0.0.1:$SINK_PORT" --jsonl "$workdir/sink.jsonl" > "$workdir/sink.out" 2>&1 &
sink_pid=$!
sleep 1

crontab=/etc/crontab
[ -f "$crontab" ] || crontab=docs/examples/crontab
echo; echo "== peerd import-crontab $crontab"
$peerd import-crontab "$crontab" --id-prefix sys-

echo; echo "== peerd task create heartbeat --every 1s --http-post http://127.0.0.1:$SINK_PORT/heartbeat"
$peerd task create heartbeat --every 1s --http-post "http://127.0.0.1:$SINK_PORT/heartbeat" --timeout 5s
$peerd task list
sleep 5
echo; echo "== peerd runs heartbeat --limit 5"
$peerd runs heartbeat --limit 5

owner=$(.venv/bin/python -c "
import json, subprocess
from peerd.core.ring import owner
c = json.loads(subprocess.check_output(['$peerd', '-o', 'json', 'cluster']))
print(owner('heartbeat', [m['node_id'] for m in c['members']]))")
pid=$(pgrep -f -- "--node-id $owner " | head -1)
echo; echo "== kill -9 $owner (pid $pid), the owner of heartbeat"
killed_at=$(date +%s.%N)
kill -9 "$pid"
for _ in $(seq 1 100); do
  latest=$($peerd -o json runs heartbeat --limit 1 | .venv/bin/python -c "import json,sys; r=json.load(sys.stdin)['runs'][0]; print(r['node_id'])")
  [ "$latest" != "$owner" ] && break
  sleep 0.2
done
moved_at=$(date +%s.%N)
printf '%s\n' "heartbeat moved from $owner to $latest $(.venv/bin/python -c "print(f'{$moved_at-$killed_at:.1f}')")s after kill -9 (lease TTL 10 s)"
sleep 3
$peerd runs heartbeat --limit 15
$peerd cluster

echo; echo "== webhook sink summary"
curl -s "http://127.0.0.1:$SINK_PORT/_summary" 2>/dev/null || .venv/bin/python -c "
import httpx; print(httpx.get('http://127.0.0.1:$SINK_PORT/_summary').text)"
echo
if [ "$keep" = 1 ]; then
  echo "cluster left running (peerd dev pid $dev_pid); export PEERD_SERVER=$PEERD_SERVER"
fi
