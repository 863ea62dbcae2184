# Records every stream under live/ to ./recordings, as FLV and as MP4.
#
#   sluice run examples/record.hcl
#   ffmpeg -re -i input.mp4 -c copy -f flv rtmp://127.0.0.1/live/demo
#
# gives, while the stream plays on as usual,
#
#   recordings/live/demo/20261125T034501Z.flv
#   recordings/live/demo/20261125T034501Z.mp4
#
# and a new pair every 10 minutes, each starting on a keyframe at time 0.
# Both survive a crash of the server: the FLV up to its last write, the MP4
# (fragmented) up to its last fragment, at most a second behind.

server {
  http = ":8080"            # HTTP-FLV play: http://HOST:8080/live/NAME.flv
  api  = "127.0.0.1:9997"   # /metrics: sluice_record_files_total, sluice_record_errors_total ...
}

ingest "rtmp" {
  listen = ":1935"          # publish and play: rtmp://HOST/live/NAME
}

pipeline "live" {
  match           = "live/*"
  gop_cache       = 1       # recordings start at the stream's first keyframe
  publisher_grace = "5s"    # players stay through an encoder reconnect; recordings start new files

  output "http_flv" {}

  record "flv" {
    path    = "recordings/{app}/{name}/{start}.flv"
    segment = "10m"         # a new file at the first keyframe after 10 minutes
  }

  record "mp4" {
    path      = "recordings/{app}/{name}/{start}.mp4"
    segment   = "10m"
    max_size  = "2GB"       # ... or after 2 GB, whichever comes first
    fragment  = "1s"        # what a crash can lose, at most
    faststart = true        # finished files are rewritten with moov first
    max_age   = "7d"        # delete this block's recordings after a week
  }
}
