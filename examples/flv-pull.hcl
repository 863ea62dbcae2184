# Mirrors another server's HTTP-FLV stream (another Sluice, SRS, any
# HTTP-FLV server) as live/main, and serves it on every output here.
#
#   sluice run examples/flv-pull.hcl
#   ffplay http://127.0.0.1:8080/live/main.flv
#
# When the upstream drops, the pull reconnects with backoff; players stay
# connected while that takes less than publisher_grace, and their
# timestamps carry on.

server {
  http = ":8080"
  api  = "127.0.0.1:9997"
}

ingest "flv_pull" "origin" {
  url       = "http://127.0.0.1:8081/live/main.flv"
  stream    = "live/main"
  retry_min = "1s"    # backoff between attempts, doubling up to retry_max
  retry_max = "30s"
}

pipeline "live" {
  match           = "live/*"
  publisher_grace = "10s"
  output "http_flv" {}
  output "hls" {}
}
