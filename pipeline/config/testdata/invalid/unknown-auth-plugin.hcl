pipeline "live" {
  match = "live/*"
  auth  = "tokens"
}
