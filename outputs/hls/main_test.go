package hls_test

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: every muxer, reader and blocked gohlslib request must be gone once its server stops.
func TestMain(m *testing.M) { leakcheck.Main(m) }
