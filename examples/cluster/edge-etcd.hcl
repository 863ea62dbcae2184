# An edge that finds each stream's origin through etcd: no upstream list to
# keep up to date, and a new origin is used as soon as it registers.
#
#   sluice run -var node=e1 -var rtmp_port=19350 -var http_port=19370 -var api_port=19395 examples/cluster/edge-etcd.hcl

variable "node" { default = "edge" }
variable "rtmp_port" { default = 19350 }
variable "http_port" { default = 19370 }
variable "api_port" { default = 19395 }
variable "etcd" { default = ["http://127.0.0.1:2379"] }

server {
  node = var.node
  http = "127.0.0.1:${var.http_port}"
  api  = "127.0.0.1:${var.api_port}"
}

ingest "rtmp" {
  listen = "127.0.0.1:${var.rtmp_port}"
}

# Lookups only: an edge holds no stream of its own.
directory "etcd" {
  endpoints = var.etcd
  announce  = false
}

pipeline "live" {
  match           = "live/*"
  publisher_grace = "10s"
  edge "pull" {
    directory    = "etcd"
    idle_timeout = "2s"
  }
  output "http_flv" {}
  output "hls" {
    variant = "lowLatency"
    always  = false # a muxer only for streams someone watches, so an idle pull lingers out
  }
}
