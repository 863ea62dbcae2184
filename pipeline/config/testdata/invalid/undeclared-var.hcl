server {
  http = var.http_port
}
