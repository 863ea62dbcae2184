pipeline "live" {
  match = "live/*"
  output "http_fvl" {}
}
