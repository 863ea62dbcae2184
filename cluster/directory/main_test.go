package directory_test

import (
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// TestMain fails the package if goroutines outlive the tests: the hub
// followers, the cluster listener, the peer questions and the etcd client
// all have an owner that stops them.
func TestMain(m *testing.M) { leakcheck.Main(m) }
