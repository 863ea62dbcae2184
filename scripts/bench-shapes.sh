#!/usr/bin/env bash
# Load Sluice and nginx-rtmp (one worker) on this machine with three load
# shapes and print one markdown table per shape, every row compared with
# nginx-rtmp measured in the same run:
#
#   streams  100 streams x 2 RTMP players each (STREAMS, PER_STREAM), each
#            stream published by its own publisher pacing the 360p 500 kbit/s
#            fixture on its own clock: server CPU-ms per second and RSS of
#            nginx-rtmp, Sluice with RTMP + HTTP-FLV only ("flv-only"), and
#            Sluice with the default pipeline.hcl's settings, LL-HLS on for
#            every stream ("default").
#   players  one stream x 600 players (PLAYERS), RTMP and HTTP-FLV, reading
#            as data arrives and every 50 ms (READ_INTERVALS), Sluice in
#            throughput mode ("flv-only"): CPU per player-second and RSS;
#            then HLS_PLAYERS LL-HLS viewers of Sluice "default".
#   merge    RTMP players of one stream at each of CURVE_NS, reading at
#            each of READ_INTERVALS: nginx-rtmp, and Sluice in latency mode
#            (merge window 0) and with merge_window of each of
#            MERGE_WINDOWS: CPU per player-second against the delay each
#            adds.
#
#   scripts/bench-shapes.sh            # ~16 s a cell, 38 cells (~11 min)
#   QUICK=1 scripts/bench-shapes.sh    # ~9 s a cell, the curve at 300 players only (~7 min)
#   SHAPES="merge" scripts/bench-shapes.sh
#
# Settings (environment): SHAPES="streams players merge", STREAMS=100,
# PER_STREAM=2, PLAYERS=600, HLS_PLAYERS=$PLAYERS, READ_INTERVALS="0 50ms",
# CURVE_NS="300 600" (QUICK: 300), MERGE_WINDOWS="5ms 10ms 20ms 50ms 100ms",
# FIXTURE=360p30-500k (or 720p30-2m), DURATION=8s, RAMP=3s, WARMUP=2s
# (QUICK: 4s, 1s, 1s), LEAD=2500ms, NGINX_MODULE=/path/ngx_rtmp_module.so, KEEP=1 (keep the
# temporary directory: configs, logs, the fixture and its ffmpeg command,
# results.jsonl).
#
# Each cell starts its server afresh and stops it afterwards, so a row's
# RSS is its own load's. CPU and RSS come from /proc/PID of the server;
# the load tool runs on the same machine and its own CPU is in each row.
#
# Needs go, ffmpeg (libx264, aac), and nginx with the RTMP module (Debian:
# apt-get install nginx libnginx-mod-rtmp); without nginx only Sluice runs.
# Every process the script starts is stopped when it exits.
set -euo pipefail

# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
bench_init

SHAPES=${SHAPES:-"streams players merge"}
STREAMS=${STREAMS:-100}
PER_STREAM=${PER_STREAM:-2}
PLAYERS=${PLAYERS:-600}
HLS_PLAYERS=${HLS_PLAYERS:-$PLAYERS}
READ_INTERVALS=${READ_INTERVALS:-"0 50ms"}
MERGE_WINDOWS=${MERGE_WINDOWS:-"5ms 10ms 20ms 50ms 100ms"}
FIXTURE=${FIXTURE:-360p30-500k}
LEAD=${LEAD:-2500ms} # more than one GOP: a GOP cache holds a keyframe, HLS a segment
if [ "${QUICK:-0}" = 1 ]; then
	DURATION=${DURATION:-4s}
	RAMP=${RAMP:-1s}
	WARMUP=${WARMUP:-1s}
	CURVE_NS=${CURVE_NS:-300}
else
	DURATION=${DURATION:-8s}
	RAMP=${RAMP:-3s}
	WARMUP=${WARMUP:-2s}
	CURVE_NS=${CURVE_NS:-"300 600"}
fi

build_tools
INPUT=$(fixture "$FIXTURE")
find_nginx

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RESULTS=$TMP/results.jsonl
: >"$RESULTS"

# start_sluice NAME MODE MERGE HLS starts Sluice on fresh ports from a
# config written to TMP/sluice-NAME.hcl, trying other ports if it cannot
# bind the first.
start_sluice() {
	local try
	for try in 1 2 3; do
		write_sluice_config "$@"
		"$TMP/sluice" run "$TMP/sluice-$1.hcl" >"$TMP/sluice-$1.log" 2>&1 &
		SERVER_PID=$!
		PIDS+=("$SERVER_PID")
		if wait_port "$RTMP_PORT" "$SERVER_PID" && wait_port "$HTTP_PORT" "$SERVER_PID"; then
			return 0
		fi
		stop_server
		log "sluice did not start (try $try): $(tail -n 1 "$TMP/sluice-$1.log")"
	done
	return 1
}

# write_sluice_config NAME MODE MERGE HLS picks fresh ports and writes
# TMP/sluice-NAME.hcl: ingest RTMP, one "live/*" pipeline with the default
# pipeline.hcl's settings but write_mode MODE and merge_window MERGE,
# HTTP-FLV out. HLS=1 makes it the default deployment: its HTTP and UDP
# ingests, its API, and its LL-HLS output.
write_sluice_config() {
	local name=$1 mode=$2 merge=$3 hls=$4 extra="" out="" window=""
	RTMP_PORT=$(free_port)
	HTTP_PORT=$(free_port)
	local api='""'
	if [ "$mode" = throughput ]; then
		window="merge_window    = \"$merge\""
	fi
	if [ "$hls" = 1 ]; then
		api="\"127.0.0.1:$(free_port)\""
		extra="ingest \"flv_http\" {}
ingest \"mpegts_http\" {}
ingest \"mpegts_udp\" \"udp\" {
  listen  = \"127.0.0.1:$(free_port)\"
  stream  = \"live/udp\"
  timeout = \"5s\"
}"
		out='output "hls" {
    variant = "lowLatency"
    segment = "1s"
    part    = "200ms"
  }'
	fi
	cat >"$TMP/sluice-$name.hcl" <<EOF
server {
  http = "127.0.0.1:$HTTP_PORT"
  api  = $api
}
ingest "rtmp" {
  listen = "127.0.0.1:$RTMP_PORT"
}
$extra
pipeline "live" {
  match           = "live/*"
  gop_cache       = 1
  publisher_grace = "5s"
  wait_publisher  = "10s"
  write_mode      = "$mode"
  $window
  output "http_flv" {}
  $out
}
EOF
}

# cell SHAPE SERVER CONFIG PROTO N [FLAG ...]: one load run against the
# server started last; N is players per stream, FLAGs go to sluicebench.
cell() {
	local shape=$1 server=$2 config=$3 proto=$4 n=$5 name play
	shift 5
	name=$shape-$server-$config-$proto-$n-$RANDOM
	case $proto in
	rtmp) play=rtmp://127.0.0.1:$RTMP_PORT/live/$name ;;
	http-flv) play=http://127.0.0.1:$HTTP_PORT/live/$name.flv ;;
	ll-hls) play=http://127.0.0.1:$HTTP_PORT/live/$name/index.m3u8 ;;
	esac
	log "$shape: $server $config $proto N=$n $*"
	if ! "$BENCH" -json -input "$INPUT" -publish "rtmp://127.0.0.1:$RTMP_PORT/live/$name" -play "$play" \
		-n "$n" -ramp "$RAMP" -warmup "$WARMUP" -duration "$DURATION" -lead "$LEAD" -pid "$SERVER_PID" \
		-tag "shape=$shape" -tag "server=$server" -tag "config=$config" "$@" >>"$RESULTS" 2>>"$TMP/sluicebench.log"; then
		log "run failed: $(tail -n 1 "$TMP/sluicebench.log")"
	fi
}

# nginx_cell and sluice_cell run one cell on a server of their own.
# A cell whose server does not start is left out of the tables.
nginx_cell() {
	[ -n "$NGINX" ] || return 0
	start_nginx || return 0
	cell "$1" nginx-rtmp - "${@:2}"
	stop_server
}
sluice_cell() {
	local shape=$1 config=$2 mode=$3 merge=$4 hls=$5
	shift 5
	start_sluice "$config" "$mode" "$merge" "$hls" || return 0
	cell "$shape" sluice "$config" "$@"
	stop_server
}

for shape in $SHAPES; do
	case $shape in
	streams)
		nginx_cell streams rtmp "$PER_STREAM" -streams "$STREAMS"
		sluice_cell streams flv-only throughput 100ms 0 rtmp "$PER_STREAM" -streams "$STREAMS"
		sluice_cell streams default throughput 100ms 1 rtmp "$PER_STREAM" -streams "$STREAMS"
		;;
	players)
		for ri in $READ_INTERVALS; do
			nginx_cell players rtmp "$PLAYERS" -read-interval "$ri"
			sluice_cell players flv-only throughput 100ms 0 rtmp "$PLAYERS" -read-interval "$ri"
			sluice_cell players flv-only throughput 100ms 0 http-flv "$PLAYERS" -read-interval "$ri"
		done
		sluice_cell players default throughput 100ms 1 ll-hls "$HLS_PLAYERS"
		;;
	merge)
		for ri in $READ_INTERVALS; do
			for n in $CURVE_NS; do
				nginx_cell merge rtmp "$n" -read-interval "$ri"
				sluice_cell merge latency latency 0 0 rtmp "$n" -read-interval "$ri" -tag "merge=latency (0)"
				for mw in $MERGE_WINDOWS; do
					sluice_cell merge "merge-$mw" throughput "$mw" 0 rtmp "$n" -read-interval "$ri" -tag "merge=$mw"
				done
			done
		done
		;;
	*)
		log "unknown shape $shape (want streams, players, merge)"
		exit 2
		;;
	esac
done

echo
echo "load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$(machine_line); input $(basename "$INPUT") ($(cat "$INPUT.cmd"))"
echo "window $DURATION after a $RAMP ramp and $WARMUP warm-up, publishers $LEAD ahead; each cell on a fresh server"
echo
"$BENCH" report "$RESULTS"
