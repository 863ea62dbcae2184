# A tls block while https is off, and one twice.
server {
  tls {
    cert_file = "cert.pem"
    key_file  = ""
  }
  tls {
    cert_file = "cert.pem"
    key_file  = "key.pem"
  }
}
