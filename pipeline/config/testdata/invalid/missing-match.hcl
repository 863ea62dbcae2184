pipeline "live" {
  gop_cache = 1
}
