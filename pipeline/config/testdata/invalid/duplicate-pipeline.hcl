pipeline "live" {
  match = "live/*"
}

pipeline "live" {
  match = "other/*"
}
