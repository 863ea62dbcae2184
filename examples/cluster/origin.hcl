# An origin of a Sluice cluster. Encoders publish here (or to any edge,
# which forwards); edges pull from here on demand. Several origins run from
# this one file, with only -var changing between them:
#
#   sluice run -var node=o1 -var rtmp_port=19360 -var http_port=19380 -var api_port=19390 examples/cluster/origin.hcl
#   sluice run -var node=o2 -var rtmp_port=19361 -var http_port=19381 -var api_port=19391 examples/cluster/origin.hcl
#
# See examples/cluster/edge.hcl for the edges, and the README's "Cluster"
# section for a walk-through.

variable "node" { default = "origin" }
variable "rtmp_port" { default = 19360 }
variable "http_port" { default = 19380 }
variable "api_port" { default = 19390 }

server {
  node = var.node
  http = "127.0.0.1:${var.http_port}"
  api  = "127.0.0.1:${var.api_port}"
}

ingest "rtmp" {
  listen = "127.0.0.1:${var.rtmp_port}"
}

ingest "flv_http" {}

pipeline "live" {
  match           = "live/*"
  publisher_grace = "5s"
  output "http_flv" {}
  output "hls" { variant = "lowLatency" }
}
