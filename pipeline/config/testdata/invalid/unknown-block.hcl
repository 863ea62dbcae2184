ingest "rtmp" {}

pipelin "live" {
  match = "live/*"
}
