# The default deployment: one node, every ingest and every output on, for
# streams under live/. Push with any of
#   ffmpeg -re -i input.mp4 -c copy -f flv rtmp://127.0.0.1/live/demo
#   ffmpeg -re -i input.mp4 -c copy -f flv -method POST http://127.0.0.1:8080/live/demo.flv
#   ffmpeg -re -i input.mp4 -c copy -f mpegts 'udp://127.0.0.1:5000?pkt_size=1316'   (becomes live/udp)
# and play with
#   ffplay rtmp://127.0.0.1/live/demo
#   ffplay http://127.0.0.1:8080/live/demo.flv
#   ffplay http://127.0.0.1:8080/live/demo/index.m3u8

server {
  http = ":8080"           # HTTP-FLV and HLS play, FLV and MPEG-TS push
  api  = "127.0.0.1:9997"  # /api/v1/streams and /metrics; loopback only
}

ingest "rtmp" {
  listen = ":1935"         # publish and play: rtmp://HOST/APP/NAME
}

ingest "flv_http" {}       # POST or PUT http://HOST:8080/APP/NAME.flv
ingest "mpegts_http" {}    # POST http://HOST:8080/APP/NAME.ts

ingest "mpegts_udp" "udp" {
  listen  = ":5000"        # MPEG-TS over UDP (multicast: listen = "239.0.0.1:5000")
  stream  = "live/udp"
  timeout = "5s"           # a silent source is unpublished after 5 s
}

pipeline "live" {
  match           = "live/*"
  gop_cache       = 1       # a new player starts at the newest keyframe
  publisher_grace = "5s"    # players stay connected while an encoder reconnects
  wait_publisher  = "10s"   # a player may arrive up to 10 s before its publisher
  write_mode      = "throughput"
  merge_window    = "100ms" # players are written at most every 100 ms

  output "http_flv" {}      # GET http://HOST:8080/live/NAME.flv

  output "hls" {            # GET http://HOST:8080/live/NAME/index.m3u8
    variant = "lowLatency"  # or "mpegts", "fmp4"
    segment = "1s"
    part    = "200ms"
  }

  # Recording (see examples/record.hcl): uncomment to keep every stream.
  # record "mp4" {
  #   path    = "recordings/{app}/{name}/{start}.mp4"
  #   segment = "10m"
  # }

  # Plugins (see examples/auth.hcl):
  #   auth = plugin.tokens
  #   transcode "abr" { plugin = plugin.ffmpeg  renditions = ["720p", "360p"] }
}
