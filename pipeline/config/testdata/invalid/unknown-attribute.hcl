server {
  htp = ":8080"
}
