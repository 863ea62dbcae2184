server {
  http = ":8080"
