ingest "rtmp" {
  listen  = ":1935"
  timeout = "5s"
}
