# https without its certificate, and certificates that no listener uses.
server {
  https = ":8443"
  api   = ""
  api_tls {
    cert_file = "api.pem"
  }
  tls_cert = "cert.pem"
}
