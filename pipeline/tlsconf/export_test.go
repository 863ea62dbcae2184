package tlsconf

import "time"

// SetCheckInterval lets tests look at the files more often than once a
// second.
func SetCheckInterval(c *Certs, d time.Duration) { c.interval = d }
