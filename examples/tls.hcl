# TLS: the default deployment's plain ports, and beside them RTMPS on :1936
# and HTTPS (HTTP-FLV, HLS, FLV and TS push) on :8443.
#
#   sluice run -var cert_file=/etc/sluice/fullchain.pem -var key_file=/etc/sluice/privkey.pem examples/tls.hcl
#
# cert_file is the certificate chain, leaf first, and key_file its private
# key, both PEM (what certbot writes as fullchain.pem and privkey.pem).
# Without -var they are ./tls/cert.pem and ./tls/key.pem; for a try on one
# machine, make a self-signed pair there:
#
#   mkdir -p tls && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
#     -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
#     -keyout tls/key.pem -out tls/cert.pem
#
# then publish and play over TLS (-ca_file makes ffmpeg check the
# certificate; it does not by default):
#
#   ffmpeg -re -i input.mp4 -c copy -f flv rtmps://127.0.0.1:1936/live/demo
#   ffplay -tls_verify 1 -ca_file tls/cert.pem https://127.0.0.1:8443/live/demo.flv
#   ffplay https://127.0.0.1:8443/live/demo/index.m3u8
#
# and in the clear as with the default file (rtmp://127.0.0.1/live/demo,
# http://127.0.0.1:8080/live/demo.flv). Both listeners speak TLS 1.2 and
# 1.3 only. To renew a certificate, write the new files over the old ones:
# the next connection gets the new certificate, without a restart;
# connections already open keep theirs. A pair that does not load (a key
# that does not match) leaves the old certificate in use, with one log
# line and sluice_tls_certificate_reloads_total{result="failed"}.

variable "cert_file" {
  default     = "tls/cert.pem"
  description = "PEM certificate chain, leaf first"
}
variable "key_file" {
  default     = "tls/key.pem"
  description = "PEM private key of the certificate"
}

server {
  http  = ":8080"          # HTTP-FLV and HLS play, FLV and MPEG-TS push
  https = ":8443"          # the same, over TLS (HTTP/1.1 and HTTP/2)
  tls {
    cert_file = var.cert_file
    key_file  = var.key_file
  }
  api = "127.0.0.1:9997"   # /api/v1/streams and /metrics; loopback only
  # api_tls { cert_file = "..."  key_file = "..." } would make it HTTPS too.
}

ingest "rtmp" {
  listen = ":1935"         # rtmp://HOST/APP/NAME
}

ingest "rtmp" "tls" {
  listen = ":1936"         # rtmps://HOST:1936/APP/NAME
  tls {
    cert_file = var.cert_file
    key_file  = var.key_file
  }
}

ingest "flv_http" {}       # POST or PUT http(s)://HOST:8080|8443/APP/NAME.flv
ingest "mpegts_http" {}    # POST http(s)://HOST:8080|8443/APP/NAME.ts

ingest "mpegts_udp" "udp" {
  listen  = ":5000"        # MPEG-TS over UDP
  stream  = "live/udp"
  timeout = "5s"
}

pipeline "live" {
  match           = "live/*"
  gop_cache       = 1
  publisher_grace = "5s"
  wait_publisher  = "10s"

  output "http_flv" {}      # GET http(s)://HOST:8080|8443/live/NAME.flv

  output "hls" {            # GET http(s)://HOST:8080|8443/live/NAME/index.m3u8
    variant = "lowLatency"
    segment = "1s"
    part    = "200ms"
  }
}
