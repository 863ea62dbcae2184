# Pushes every stream published here to other RTMP servers (a backup
# origin, a CDN's ingest, nginx-rtmp, another Sluice), and serves it here
# as well.
#
#   sluice run examples/forward.hcl
#
# To try it on one machine, run a second server on port 1936 to receive
# the forward (another Sluice with its ports moved, or nginx-rtmp), publish
# here, and play the copy there:
#
#   ffmpeg -re -stream_loop -1 -i input.mp4 -c copy -f flv rtmp://127.0.0.1/live/cam1
#   ffplay rtmp://127.0.0.1:1936/live/cam1
#
# A stream APP/NAME goes to TO/NAME for each entry of to, with the entry's
# query string (a stream key) kept: live/cam1 goes to
# rtmp://127.0.0.1:1936/live/cam1. A target that is down is retried with
# backoff; meanwhile it holds no reader of the stream, and each reconnect
# starts at the latest keyframe, after the metadata and sequence headers.
# Logs: "forward connected", "forward dropped" (cause, retry_in). Metrics:
# sluice_forward_sessions_total{target} and
# sluice_forward_closed_total{target,cause}, target being host:port.

server {
  http = ":8080"
  api  = "127.0.0.1:9997"
}

ingest "rtmp" {
  listen = ":1935"
}

pipeline "live" {
  match = "live/*"
  output "http_flv" {}

  forward "rtmp" {
    to           = ["rtmp://127.0.0.1:1936/live"] # rtmp://HOST:PORT/APP, ?key=... kept
    match        = "live/*"                       # optional: a subset of the pipeline
    retry_min    = "1s"                           # backoff between attempts, doubling up to retry_max
    retry_max    = "30s"
    idle_timeout = "10s"                          # connection setup, and a target that takes nothing
  }
}
