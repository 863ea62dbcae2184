ingest "rtmp" {
  listen            = ":1935"
  handshake_timeout = "soon"
}
