# Mirrors another server's RTMP stream (another Sluice, nginx-rtmp, SRS,
# any RTMP server that lets clients play) as live/mirror, and serves it on
# every output here.
#
#   sluice run examples/rtmp-pull.hcl
#
# To try it on one machine, give it an upstream on port 1936; ffmpeg can
# be one, serving a file to whoever plays (one player at a time, hence the
# loop, which also shows the pull reconnecting):
#
#   while :; do ffmpeg -re -stream_loop -1 -i input.mp4 -c copy -f flv \
#     -listen 1 rtmp://127.0.0.1:1936/live/src; done
#   ffplay http://127.0.0.1:8080/live/mirror.flv
#
# The pull connects when the upstream delivers media, not before, so a
# stream the upstream does not have never claims live/mirror. When the
# upstream drops, the pull reconnects with backoff; players stay connected
# while that takes less than publisher_grace, and their timestamps carry
# on. Metrics: sluice_pull_connects_total, sluice_pull_reconnects_total and
# sluice_pull_closed_total{cause=...}, by kind and stream.

server {
  http = ":8080"
  api  = "127.0.0.1:9997"
}

ingest "rtmp" {
  listen = ":1935"
}

ingest "rtmp_pull" "origin" {
  url          = "rtmp://127.0.0.1:1936/live/src" # a ?token=... goes with the stream name
  stream       = "live/mirror"
  idle_timeout = "10s"   # an upstream silent this long is dropped and retried
  retry_min    = "1s"    # backoff between attempts, doubling up to retry_max
  retry_max    = "30s"
}

pipeline "live" {
  match           = "live/*"
  publisher_grace = "10s"
  output "http_flv" {}
  output "hls" {}
}
