# The default deployment: one node, every ingest and every output on, for
# streams under live/. Push with
#   ffmpeg -re -i input.mp4 -c copy -f flv rtmp://127.0.0.1/live/demo
# and play with
#   ffplay rtmp://127.0.0.1/live/demo
#   ffplay http://127.0.0.1:8080/live/demo.flv

server {
  http = ":8080"           # HTTP-FLV play (and, as they land, HLS and FLV/TS push)
  api  = "127.0.0.1:9997"  # /api/v1/streams and /metrics; loopback only
}

ingest "rtmp" {
  listen = ":1935"         # publish and play: rtmp://HOST/APP/NAME
}

pipeline "live" {
  match           = "live/*"
  gop_cache       = 1       # a new player starts at the newest keyframe
  publisher_grace = "5s"    # players stay connected while an encoder reconnects
  wait_publisher  = "10s"   # a player may arrive up to 10 s before its publisher
  write_mode      = "throughput"
  merge_window    = "100ms" # players are written at most every 100 ms

  output "http_flv" {}      # GET http://HOST:8080/live/NAME.flv
}
