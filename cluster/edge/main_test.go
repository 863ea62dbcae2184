package edge_test

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/leakcheck"
)

// bin is the sluice binary the process tests run, built once per test
// binary, on first use, into a directory TestMain removes.
var bin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TestMain fails the package if goroutines outlive the tests (every relay,
// health check and forward has an owner that stops it), and removes the
// binary the process tests built. It is leakcheck.Main with that removal,
// which must run after the tests and before the exit.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if bin.dir != "" {
		os.RemoveAll(bin.dir)
	}
	if code == 0 {
		http.DefaultClient.CloseIdleConnections()
		if err := leakcheck.Check(before, 5*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// sluiceBinary builds ./cmd/sluice once and returns its path.
func sluiceBinary(t testing.TB) string {
	t.Helper()
	bin.once.Do(func() {
		bin.dir, bin.err = os.MkdirTemp("", "sluice-edge-test-")
		if bin.err != nil {
			return
		}
		bin.path = filepath.Join(bin.dir, "sluice")
		cmd := exec.Command("go", "build", "-o", bin.path, "./cmd/sluice")
		cmd.Dir = sluicetest.Root()
		if out, err := cmd.CombinedOutput(); err != nil {
			bin.err = fmt.Errorf("go build ./cmd/sluice: %v\n%s", err, out)
		}
	})
	if bin.err != nil {
		t.Fatal(bin.err)
	}
	return bin.path
}
