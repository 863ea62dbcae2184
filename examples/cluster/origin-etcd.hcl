# An origin of a Sluice origin cluster that finds streams through etcd.
# Every origin registers the streams published to it under its lease; a
# play for a stream held by another origin is pulled from that origin; a
# crashed origin's streams leave the directory within the lease TTL.
#
#   etcd --data-dir /tmp/etcd &      # Debian: apt-get install etcd-server
#   sluice run -var node=o1 -var rtmp_port=19360 -var http_port=19380 -var api_port=19390 examples/cluster/origin-etcd.hcl &
#   sluice run -var node=o2 -var rtmp_port=19361 -var http_port=19381 -var api_port=19391 examples/cluster/origin-etcd.hcl &
#
# Publish to o2, play from o1 (or from an edge-etcd.hcl edge): o1 asks etcd
# and pulls from o2.

variable "node" { default = "origin" }
variable "rtmp_port" { default = 19360 }
variable "http_port" { default = 19380 }
variable "api_port" { default = 19390 }
variable "etcd" { default = ["http://127.0.0.1:2379"] }

server {
  node = var.node
  http = "127.0.0.1:${var.http_port}"
  api  = "127.0.0.1:${var.api_port}"
}

ingest "rtmp" {
  listen = "127.0.0.1:${var.rtmp_port}"
}

directory "etcd" {
  endpoints = var.etcd
  prefix    = "/sluice/"
  ttl       = "5s"
  # Real deployments set the URLs other nodes reach this one at:
  # rtmp_url = "rtmp://o1.example:1935"
  # http_url = "http://o1.example:8080"
}

pipeline "live" {
  match = "live/*"
  # A stream nobody publishes here is pulled from the origin that holds it.
  edge "pull" {
    directory = "etcd"
  }
  output "http_flv" {}
  output "hls" {
    variant = "lowLatency"
    always  = false # a muxer only for streams someone watches, so an idle pull lingers out
  }
}
