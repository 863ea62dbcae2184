server {
  limits {
    max_streams         = -5
    rtmp_max_chunk_size = "2^31-1"
    exempt              = ["everyone"]
  }
}
