# A cluster block in a build that has no cluster kinds is an error, not
# silently ignored.
cluster {
  node = "a"
}

pipeline "live" {
  match = "live/*"
  forwrd {}
}
