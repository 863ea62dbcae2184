server {
  stop_hold = "-1s"
}
