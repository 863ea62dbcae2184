server {
  http = ":8080"
  api  = "0.0.0.0:9997"
}
