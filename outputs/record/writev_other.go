//go:build !unix

package record

import "os"

// writeVec writes bufs to f one by one where writev(2) is not available.
func writeVec(f *os.File, bufs [][]byte) (int64, error) {
	var total int64
	for _, b := range bufs {
		n, err := f.Write(b)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
