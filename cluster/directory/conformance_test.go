package directory_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/stagetest"
)

const conformanceFile = `
server {
  node = "conformance"
  http = "127.0.0.1:0"
  api  = ""
}
pipeline "live" {
  match = ["live/*"]
}
`

// TestConformance checks both kinds against the Stage and Binder
// contracts. While each runs, it answers a lookup (static: asking a peer
// that is down; etcd: a Get against a real etcd), and the static one
// answers on its cluster listener.
func TestConformance(t *testing.T) {
	t.Run("static", func(t *testing.T) {
		k := pipeline.NewKinds()
		directory.Register(k)
		stagetest.Conformance(t, k, stagetest.Case{
			Type: "directory", Kind: "static",
			Body: fmt.Sprintf(`
listen = "127.0.0.1:0"
peers  = [%q]
`, refusedURL(t)),
			File: conformanceFile,
			While: func(t testing.TB, r stagetest.Running) {
				st := r.Stage.(*directory.Static)
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
				resp, err := c.Get("http://" + st.Addr().String() + "/cluster/v1/health")
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("health: %s", resp.Status)
				}
				lookupNotFound(t, st)
			},
		})
	})
	t.Run("etcd", func(t *testing.T) {
		e := sluicetest.StartEtcd(t)
		k := pipeline.NewKinds()
		directory.Register(k)
		stagetest.Conformance(t, k, stagetest.Case{
			Type: "directory", Kind: "etcd",
			Body: fmt.Sprintf(`
endpoints = [%q]
prefix    = "/conformance/"
`, e.Endpoint),
			File: conformanceFile,
			While: func(t testing.TB, r stagetest.Running) {
				sluicetest.Eventually(t, 10*time.Second, func() bool {
					v, ok, err := e.Get(context.Background(), "/conformance/nodes/conformance")
					return err == nil && ok && v != ""
				}, "the node never registered")
				lookupNotFound(t, r.Stage.(directory.Directory))
			},
		})
	})
}

func lookupNotFound(t testing.TB, d directory.Directory) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := d.Lookup(ctx, "live/nobody"); !errors.Is(err, pipeline.ErrStreamNotFound) {
		t.Fatalf("Lookup: %v, want stream not found", err)
	}
}
