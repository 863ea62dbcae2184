package mpegtsudp_test

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: every source goroutine and HTTP push ends with its server.
func TestMain(m *testing.M) { leakcheck.Main(m) }
