#!/usr/bin/env bash
# Load Sluice and nginx-rtmp side by side on this machine and print a
# markdown table: server CPU per player-second and its ratio to
# nginx-rtmp's RTMP at the same N, time to first frame, server-added delay,
# stalls, delivered Mbit/s, memory, and the machine's load average (other
# work on the machine skews every figure; the load column says how much).
#
#   scripts/bench-vs-nginx.sh            # N = 1 100 300 600, ~16 s a cell, 20 cells (~6 min)
#   QUICK=1 scripts/bench-vs-nginx.sh    # shorter windows (~3 min)
#   SCALE=1 scripts/bench-vs-nginx.sh    # find the most players without a stall (600 kbit/s)
#
# scripts/bench-shapes.sh measures other load shapes (many streams, players
# that read periodically, LL-HLS viewers, the merge-window curve).
#
# Settings (environment): NS="1 100 300 600", DURATION=8s, RAMP=3s,
# WARMUP=2s, LEAD=2500ms, STEP=200, STEP_TIME=8s, MAX_PLAYERS=3000,
# MAX_TIME=3m, NGINX_MODULE=/path/ngx_rtmp_module.so, KEEP=1 (keep the
# temporary directory: configs, logs, results.jsonl).
#
# Needs go, ffmpeg (libx264, aac), and nginx with the RTMP module (Debian:
# apt-get install nginx libnginx-mod-rtmp); without nginx only Sluice runs.
# Every process the script starts is stopped when it exits.
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_init

NS=${NS:-"1 100 300 600"}
DURATION=${DURATION:-8s}
RAMP=${RAMP:-3s}
WARMUP=${WARMUP:-2s}
LEAD=${LEAD:-2500ms} # more than one GOP, so a GOP cache holds a keyframe
if [ "${QUICK:-0}" = 1 ]; then
	DURATION=${QUICK_DURATION:-4s}
	RAMP=${QUICK_RAMP:-1s}
	WARMUP=${QUICK_WARMUP:-1s}
fi
SCALE=${SCALE:-0}
STEP=${STEP:-200}
STEP_TIME=${STEP_TIME:-8s}
MAX_PLAYERS=${MAX_PLAYERS:-3000}
MAX_TIME=${MAX_TIME:-3m}

# Servers that run side by side: save KEY remembers the server started
# last under KEY, use KEY makes it the one the next cell loads.
declare -A SAVED_RTMP SAVED_HTTP SAVED_PID
save() {
	SAVED_RTMP[$1]=$RTMP_PORT
	SAVED_HTTP[$1]=${HTTP_PORT:-}
	SAVED_PID[$1]=$SERVER_PID
}
use() {
	RTMP_PORT=${SAVED_RTMP[$1]}
	HTTP_PORT=${SAVED_HTTP[$1]}
	SERVER_PID=${SAVED_PID[$1]}
}

build_tools
if [ "$SCALE" = 1 ]; then
	INPUT=$(fixture 360p30-600k)
else
	INPUT=$(fixture 720p30-2m)
fi
find_nginx

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS=$TMP/results.jsonl
: >"$RESULTS"

# start_sluice MODE starts Sluice with write_mode MODE on fresh ports.
start_sluice() {
	local mode=$1 merge=""
	RTMP_PORT=$(free_port)
	HTTP_PORT=$(free_port)
	if [ "$mode" = throughput ]; then
		merge='merge_window = "100ms"'
	fi
	cat >"$TMP/sluice-$mode.hcl" <<EOF
server {
  http = "127.0.0.1:$HTTP_PORT"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:$RTMP_PORT"
}
pipeline "live" {
  match      = "live/*"
  gop_cache  = 1
  write_mode = "$mode"
  $merge
  output "http_flv" {}
}
EOF
	"$TMP/sluice" run "$TMP/sluice-$mode.hcl" >"$TMP/sluice-$mode.log" 2>&1 &
	SERVER_PID=$!
	PIDS+=("$SERVER_PID")
	wait_port "$RTMP_PORT" "$SERVER_PID"
	wait_port "$HTTP_PORT" "$SERVER_PID"
}

# cell SERVER MODE PROTO N: one load run against the server started last.
cell() {
	local server=$1 mode=$2 proto=$3 n=$4 name play
	name=$server-$mode-$proto-$n
	play=rtmp://127.0.0.1:$RTMP_PORT/live/$name
	if [ "$proto" = http-flv ]; then
		play=http://127.0.0.1:$HTTP_PORT/live/$name.flv
	fi
	log "$server $mode $proto N=$n"
	if ! "$BENCH" -json -input "$INPUT" -publish "rtmp://127.0.0.1:$RTMP_PORT/live/$name" -play "$play" \
		-n "$n" -ramp "$RAMP" -warmup "$WARMUP" -duration "$DURATION" -lead "$LEAD" -pid "$SERVER_PID" \
		-tag "server=$server" -tag "mode=$mode" >>"$RESULTS" 2>>"$TMP/sluicebench.log"; then
		log "run failed: $(tail -n 1 "$TMP/sluicebench.log")"
	fi
}

# scale SERVER MODE PROTO: the find-max run against the server started last.
scale() {
	local server=$1 mode=$2 proto=$3 name play
	name=$server-$mode-$proto-scale
	play=rtmp://127.0.0.1:$RTMP_PORT/live/$name
	if [ "$proto" = http-flv ]; then
		play=http://127.0.0.1:$HTTP_PORT/live/$name.flv
	fi
	log "$server $mode $proto: adding $STEP players every $STEP_TIME until a stall (at most $MAX_PLAYERS, $MAX_TIME)"
	if ! "$BENCH" -json -find-max -input "$INPUT" -publish "rtmp://127.0.0.1:$RTMP_PORT/live/$name" -play "$play" \
		-step "$STEP" -step-time "$STEP_TIME" -max-players "$MAX_PLAYERS" -max-time "$MAX_TIME" -lead "$LEAD" \
		-pid "$SERVER_PID" -tag "server=$server" -tag "mode=$mode" >>"$RESULTS"; then
		log "run failed"
	fi
}

if [ "$SCALE" = 1 ]; then
	start_sluice throughput
	scale sluice throughput rtmp
	scale sluice throughput http-flv
	stop_server
	if [ -n "$NGINX" ]; then
		start_nginx
		scale nginx-rtmp - rtmp
		stop_server
	fi
else
	# All three servers run at once (an idle one costs nothing) and the
	# cells of one N run back to back, so that the rows compared with each
	# other saw the machine in about the same state.
	if [ -n "$NGINX" ]; then
		start_nginx
		save nginx
	fi
	for mode in throughput latency; do
		start_sluice "$mode"
		save "$mode"
	done
	for n in $NS; do
		if [ -n "$NGINX" ]; then
			use nginx
			cell nginx-rtmp - rtmp "$n"
		fi
		for mode in throughput latency; do
			use "$mode"
			cell sluice "$mode" rtmp "$n"
			cell sluice "$mode" http-flv "$n"
		done
	done
fi

echo
echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(machine_line); input $(basename "$INPUT"); window $DURATION after a $RAMP ramp and $WARMUP warm-up"
echo
"$BENCH" report "$RESULTS"
