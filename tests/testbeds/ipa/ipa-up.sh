#!/usr/bin/env bash
# ipa-up.sh RUN_ROOT API_URL MAC [LISTEN_PORT] [DISK_MB] -- start one IPA deploy-ramdisk double (needs root: losetup)
#   RUN_ROOT     this bed's own directory (created): disk.img ipa.conf ipa.log dry-check.log pid loop bed.json state/
#   API_URL      Ironic API the agent looks itself up at and heartbeats to, e.g. http://127.0.0.1:6385
#   MAC          MAC of the agent's only NIC, sent as /v1/lookup?addresses=MAC
#   LISTEN_PORT  agent API port on 127.0.0.1 (default: a free port picked by the kernel)
#   DISK_MB      size of the sparse loop disk, default 64
#   env: IPA_VENV (required, made by install.sh)  IPA_LOOKUP_TIMEOUT (s, default 60: then the agent exits 1)
#        IPA_POWER_OFF_DELAY (s the agent lives on after standby.power_off / run_image, default 2)
# Prints one JSON line (also written to RUN_ROOT/bed.json):
#   {"pid": N, "loop": "/dev/loopN", "callback_url": "http://127.0.0.1:PORT", "disk_image": "RUN_ROOT/disk.img", ...}
# Before starting the agent it runs the launcher's --dry-check (same loading path as the agent) and insists that IPA
# sees exactly one disk, the new loop device, and one NIC with MAC. Idempotent: a bed already up in RUN_ROOT is
# stopped first (ipa-down.sh) and its state wiped. Writes only under RUN_ROOT.
set -euo pipefail; set +m   # no job control: the agent must be its own setsid group leader, with PID == $!
usage="usage: IPA_VENV=... ipa-up.sh RUN_ROOT API_URL MAC [LISTEN_PORT] [DISK_MB]"
[[ $# -ge 3 && $# -le 5 ]] || { echo "$usage" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd -P)
API_URL=$2; MAC=${3,,}; PORT=${4:-}; DISK_MB=${5:-64}
VENV=${IPA_VENV:?$usage}
die(){ echo "ipa-up: $*" >&2; exit 1; }
[[ $EUID == 0 ]] || die "needs root (losetup)"
[[ $MAC =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ ]] || die "bad MAC '$3'"
[[ $API_URL =~ ^https?://[^[:space:]]+$ ]] || die "API_URL must be http(s)://..."
[[ -z $PORT || $PORT =~ ^[0-9]+$ ]] || die "bad LISTEN_PORT '$PORT'"
[[ $DISK_MB =~ ^[0-9]+$ ]] && ((DISK_MB >= 32)) || die "DISK_MB must be an integer >= 32"
[[ -x $VENV/bin/rivet-ipa-double ]] || die "$VENV has no rivet-ipa-double: run $HERE/install.sh $VENV"
VENV=$(cd "$VENV" && pwd)
RUN_ROOT=$(realpath -m -- "$1")
[[ $RUN_ROOT != / ]] || die "RUN_ROOT must not be /"
case "$RUN_ROOT/" in "$HERE"/*) die "RUN_ROOT must be outside $HERE (a bed writes only under its RUN_ROOT, never into the bed's own files)" ;; esac
mkdir -p "$RUN_ROOT"
PY=$VENV/bin/python

"$HERE/ipa-down.sh" "$RUN_ROOT" >/dev/null
rm -rf "$RUN_ROOT/state"; rm -f "$RUN_ROOT"/{disk.img,ipa.conf,ipa.log,dry-check.log,bed.json}
mkdir -p "$RUN_ROOT/state/tmp"
truncate -s "${DISK_MB}M" "$RUN_ROOT/disk.img"
trap '"$HERE/ipa-down.sh" "$RUN_ROOT" >/dev/null 2>&1' EXIT   # any failure from here on: undo (cleared on success)
fail(){ echo "ipa-up: $*" >&2; exit 1; }

# -P: partition scan, so IPA's partprobe/lsblk see /dev/loopNp1. Retry: beds starting together race for a free one.
loop=
for _ in 1 2 3 4 5; do loop=$(losetup -f --show -P "$RUN_ROOT/disk.img" 2>/dev/null) && break; loop=; sleep 0.3; done
[[ -n $loop ]] || fail "losetup -f --show -P $RUN_ROOT/disk.img failed"
echo "$loop" > "$RUN_ROOT/loop"
[[ $(cat "/sys/block/${loop#/dev/}/loop/backing_file") == "$RUN_ROOT/disk.img" ]] || fail "$loop is not backed by our disk.img"

if [[ -z $PORT ]]; then
  PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
else
  "$PY" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$PORT" 2>/dev/null || fail "port $PORT on 127.0.0.1 is in use"
fi
api_url=$API_URL listen_port=$PORT lookup_timeout=${IPA_LOOKUP_TIMEOUT:-60} "$PY" -c '
import os, string, sys
print(string.Template(open(sys.argv[1]).read()).substitute(os.environ), end="")' "$HERE/ipa.conf.in" > "$RUN_ROOT/ipa.conf"

export RIVET_IPA_DISK=$loop RIVET_IPA_BACKING_DIR=$RUN_ROOT RIVET_IPA_STATE_DIR=$RUN_ROOT/state RIVET_IPA_MAC=$MAC
export RIVET_IPA_POWER_OFF_DELAY=${IPA_POWER_OFF_DELAY:-2} TMPDIR=$RUN_ROOT/state/tmp PATH=$HERE/shims:$PATH
export NO_PROXY=127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY} no_proxy=127.0.0.1,localhost${no_proxy:+,$no_proxy}
cd "$RUN_ROOT/state"

dry=$("$VENV/bin/rivet-ipa-double" --config-file "$RUN_ROOT/ipa.conf" --dry-check 2>"$RUN_ROOT/dry-check.log") \
  || fail "dry check refused: $(tail -n 3 "$RUN_ROOT/dry-check.log")"
"$PY" -c 'import json, sys
d = json.loads(sys.argv[1]); loop, mac = sys.argv[2:]
sys.exit(not (d["managers"] == ["LoopbackHardwareManager"] and d["os_install_device"] == loop
              and d["block_devices"] == [loop] and d["interfaces"] == [mac]))' "$dry" "$loop" "$MAC" \
  || fail "dry check: IPA would see $dry (want only $loop and $MAC)"

setsid "$VENV/bin/rivet-ipa-double" --config-file "$RUN_ROOT/ipa.conf" </dev/null >"$RUN_ROOT/ipa.log" 2>&1 &
pid=$!
echo "$pid" > "$RUN_ROOT/pid"
for _ in $(seq 1 150); do   # 'started' is written once the launcher's checks passed, just before IPA runs
  [[ -s $RUN_ROOT/state/started ]] && break
  kill -0 "$pid" 2>/dev/null || fail "agent exited at start ($(cat "$RUN_ROOT/state/exit" 2>/dev/null)): $(tail -n 5 "$RUN_ROOT/ipa.log")"
  sleep 0.1
done
[[ -s $RUN_ROOT/state/started ]] || fail "agent did not start within 15 s: $(tail -n 5 "$RUN_ROOT/ipa.log")"
pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)   # empty: it stopped again (lookup said ******)
[[ -z $pgid || $pgid == "$pid" ]] || fail "agent $pid is not its own process group leader (pgid $pgid)"

"$PY" -c 'import json, sys
pid, loop, port, root, mac, api = sys.argv[1:]
print(json.dumps({"pid": int(pid), "loop": loop, "callback_url": "http://127.0.0.1:" + port,
                  "disk_image": root + "/disk.img", "log": root + "/ipa.log", "mac": mac, "api_url": api}))' \
  "$pid" "$loop" "$PORT" "$RUN_ROOT" "$MAC" "$API_URL" > "$RUN_ROOT/bed.json"
trap - EXIT
cat "$RUN_ROOT/bed.json"
