# An edge of a Sluice cluster: players connect here over RTMP, HTTP-FLV or
# HLS; the first player of a stream makes the edge pull it from the first
# healthy upstream that has it, every later player shares that one pull,
# and it stops a linger after the last player leaves. If the upstream dies
# or goes silent, the edge switches to the next one without disconnecting
# anybody. A publisher connecting to the edge is forwarded to its upstream.
#
#   sluice run -var node=e1 -var rtmp_port=19350 -var http_port=19370 -var api_port=19395 \
#     -var 'upstreams=["rtmp://127.0.0.1:19360","rtmp://127.0.0.1:19361"]' examples/cluster/edge.hcl
#
# upstreams are base URLs in the order to try: rtmp://HOST:PORT or
# http://HOST:PORT (HTTP-FLV; several streams share one HTTP/2 connection
# per origin). An upstream may be another edge (edge -> edge -> origin).

variable "node" { default = "edge" }
variable "rtmp_port" { default = 19350 }
variable "http_port" { default = 19370 }
variable "api_port" { default = 19395 }
variable "upstreams" { default = ["rtmp://127.0.0.1:19360", "rtmp://127.0.0.1:19361"] }

server {
  node = var.node
  http = "127.0.0.1:${var.http_port}"
  api  = "127.0.0.1:${var.api_port}"
}

ingest "rtmp" {
  listen = "127.0.0.1:${var.rtmp_port}"
}

pipeline "live" {
  match           = "live/*"
  wait_publisher  = "5s"
  publisher_grace = "10s"

  edge "pull" {
    upstreams    = var.upstreams
    balance      = "ordered"
    linger       = "10s"
    idle_timeout = "2s"
  }

  output "http_flv" {}
  output "hls" {
    variant = "lowLatency"
    always  = false # a muxer only for streams someone watches, so an idle pull lingers out
  }
}
