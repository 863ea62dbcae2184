pipeline "live" {
  match         = "live/*"
  gop_cache     = 99
  merge_window  = "5 minutes"
  write_mode    = "fast"
}
