# Helpers shared by scripts/bench-vs-nginx.sh and scripts/bench-shapes.sh;
# sourced, not run. bench_init makes the temporary directory and the trap
# that stops, on any exit, every process a script recorded in PIDS.
# shellcheck shell=bash

log() { echo "bench: $*" >&2; }

need() {
	command -v "$1" >/dev/null 2>&1 || {
		log "$1 not found in PATH"
		exit 1
	}
}

# bench_init sets ROOT, TMP, PIDS and the exit trap, checks the tools, and
# raises the descriptor limit for many players.
bench_init() {
	ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/sluicebench.XXXXXX")
	PIDS=()
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	need go
	need ffmpeg
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
}

bench_cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [ "${KEEP:-0}" = 1 ]; then
		echo "kept $TMP" >&2
	else
		rm -rf "$TMP"
	fi
}

# build_tools builds sluice and sluicebench into TMP; BENCH names the latter.
build_tools() {
	log "building into $TMP"
	(cd "$ROOT" && go build -o "$TMP/sluice" ./cmd/sluice && go build -o "$TMP/sluicebench" ./cmd/sluicebench)
	BENCH=$TMP/sluicebench
}

# fixture NAME encodes the named load fixture into TMP and prints its path;
# the exact ffmpeg command is written beside it as NAME.flv.cmd. Every
# fixture is 10 s of 30 fps H.264 + stereo AAC with a 2 s GOP; temporal
# noise keeps x264 at its bitrate instead of far below it on a synthetic
# picture:
#   720p30-2m    1280x720, 1872k + 128k   the bench-vs-nginx.sh table
#   360p30-600k   640x360,  536k +  64k   bench-vs-nginx.sh SCALE=1
#   360p30-500k   640x360,  436k +  64k   bench-shapes.sh
fixture() {
	local name=$1 size vb ab out
	case $name in
	720p30-2m) size=1280x720 vb=1872k ab=128k ;;
	360p30-600k) size=640x360 vb=536k ab=64k ;;
	360p30-500k) size=640x360 vb=436k ab=64k ;;
	*)
		log "unknown fixture $name"
		return 1
		;;
	esac
	out=$TMP/$name.flv
	local cmd=(ffmpeg -hide_banner -loglevel error -nostdin -y
		-f lavfi -i "testsrc2=size=$size:rate=30" -f lavfi -i "sine=frequency=1000:sample_rate=48000"
		-t 10 -vf "noise=alls=12:allf=t" -c:v libx264 -preset veryfast -pix_fmt yuv420p
		-b:v "$vb" -maxrate "$vb" -bufsize "$vb" -g 60 -keyint_min 60 -sc_threshold 0
		-c:a aac -b:a "$ab" -ac 2 -f flv "$out")
	log "encoding the $name fixture"
	printf '%q ' "${cmd[@]}" >"$out.cmd"
	echo >>"$out.cmd"
	"${cmd[@]}"
	echo "$out"
}

# free_port prints a loopback port nothing listens on, below the kernel's
# ephemeral range: the load tool's own connections take ports from that
# range, and a server told to listen on one of them fails to bind.
free_port() {
	local p low
	low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true)
	low=${low:-32768}
	for _ in $(seq 200); do
		p=$((10000 + RANDOM % (low - 10000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	log "no free port"
	return 1
}

# wait_port waits until something listens on port $1; with a process id
# $2, it gives up as soon as that process has exited.
wait_port() {
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	log "nothing listens on port $1"
	return 1
}

# stop_server stops the server started last.
stop_server() {
	kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
}

# find_nginx sets NGINX and NGINX_MODULE, or NGINX="" (only Sluice runs).
find_nginx() {
	NGINX=""
	if command -v nginx >/dev/null 2>&1; then
		NGINX=$(command -v nginx)
	fi
	if [ -z "${NGINX_MODULE:-}" ]; then
		local m
		for m in /usr/lib/nginx/modules/ngx_rtmp_module.so /usr/share/nginx/modules/ngx_rtmp_module.so \
			/usr/lib64/nginx/modules/ngx_rtmp_module.so /usr/local/nginx/modules/ngx_rtmp_module.so; do
			if [ -f "$m" ]; then
				NGINX_MODULE=$m
				break
			fi
		done
	fi
	if [ -z "$NGINX" ] || [ -z "${NGINX_MODULE:-}" ]; then
		log "nginx or its RTMP module not found: only Sluice runs (apt-get install nginx libnginx-mod-rtmp)"
		NGINX=""
	fi
}

# start_nginx starts nginx-rtmp (scripts/nginx-rtmp.conf.tmpl: one worker)
# on a fresh port, trying another port if it cannot bind the first.
start_nginx() {
	local try
	HTTP_PORT=""
	mkdir -p "$TMP/nginx"
	for try in 1 2 3; do
		RTMP_PORT=$(free_port)
		sed -e "s#@MODULE@#$NGINX_MODULE#" -e "s#@DIR@#$TMP/nginx#" -e "s#@PORT@#$RTMP_PORT#" \
			"$ROOT/scripts/nginx-rtmp.conf.tmpl" >"$TMP/nginx/nginx.conf"
		"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' >"$TMP/nginx/stdout.log" 2>&1 &
		SERVER_PID=$!
		PIDS+=("$SERVER_PID")
		if wait_port "$RTMP_PORT" "$SERVER_PID"; then
			return 0
		fi
		stop_server
		log "nginx did not start (try $try): $(tail -n 1 "$TMP/nginx/nginx-error.log" 2>/dev/null)"
	done
	return 1
}

# machine_line describes the machine and the tools, for the report.
machine_line() {
	echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(uname -sr), $(go version | cut -d' ' -f3)${NGINX:+, $("$NGINX" -v 2>&1 | cut -d' ' -f3)}"
}
