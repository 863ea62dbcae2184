package host

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestNodePlugin runs plugins/examples/node-auth, a plugin with no Go in
// it, under the host: the protocol is open.
func TestNodePlugin(t *testing.T) {
	node := sluicetest.Tool(t, "node")
	npm := sluicetest.Tool(t, "npm")
	src := filepath.Join(sluicetest.Root(), "plugins", "examples", "node-auth")
	dir := t.TempDir()
	for _, f := range []string{"index.js", "health.proto", "controller.proto", "package.json", "package-lock.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	install := exec.Command(npm, "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("npm ci: %v\n%s", err, out)
	}
	h := startHost(t, fmt.Sprintf(`plugin "node" {
  command = %q
  args    = [%q]
  env     = { NODE_AUTH_KEY = "letmein", SLUICE_PROTO_DIR = %q }
  timeout = "2s"
  start_timeout = "20s"
}`, node, filepath.Join(dir, "index.js"), filepath.Join(sluicetest.Root(), "plugins", "proto")))
	p := h.Plugin("node")
	pub := pipeline.AuthRequest{Action: pipeline.ActionPublish, Proto: "rtmp", Remote: "127.0.0.1:1", Path: "live/a", Query: "key=letmein"}
	sluicetest.Eventually(t, 20*time.Second, func() bool { return p.PID() != 0 }, "node plugin did not start:\n%s", h.logs.String())
	if d := authorize(p, pub); !d.Allow {
		t.Fatalf("publish with the key: %+v", d)
	}
	pub.Query = "key=wrong"
	if d := authorize(p, pub); d.Allow || d.Reason != "wrong key" {
		t.Fatalf("publish with a wrong key: %+v", d)
	}
	play := pipeline.AuthRequest{Action: pipeline.ActionPlay, Proto: "http-flv", Remote: "127.0.0.1:1", Path: "live/a"}
	if d := authorize(p, play); !d.Allow {
		t.Fatalf("play: %+v", d)
	}
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(h.logs.String(), "refused publish live/a from 127.0.0.1:1: wrong key")
	}, "node plugin's stderr not in the log")
}
