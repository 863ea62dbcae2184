package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/plugins/host"
)

// TestOverHost runs the built plugin under the real host against an
// httptest endpoint and checks what the endpoint received and what Sluice
// decided.
func TestOverHost(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "http-callback")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	var mu sync.Mutex
	var got []body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b body
		raw, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(raw, &b) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, b)
		mu.Unlock()
		switch b.Query {
		case "empty":
		case "json-deny":
			fmt.Fprint(w, `{"allow": false, "reason": "banned", "redirect": "rtmp://other/live/x"}`)
		case "json-allow":
			fmt.Fprint(w, `{"allow": true}`)
		case "forbidden":
			http.Error(w, "no such key", http.StatusForbidden)
		case "crash":
			http.Error(w, "oops", http.StatusInternalServerError)
		}
	}))
	defer srv.Close()

	f, diags := config.Parse("t.hcl", []byte(fmt.Sprintf(`plugin "hooks" {
  command = %q
  args    = ["-url", %q]
  timeout = "3s"
}`, bin, srv.URL)), config.Options{})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	h, diags := host.New(f, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	p := h.Plugin("hooks")

	base := pipeline.AuthRequest{Action: pipeline.ActionPlay, Proto: "http-flv", Remote: "127.0.0.1:5555",
		Path: "live/cam1", Pipeline: "live", Node: "n1", URL: "/live/cam1.flv"}
	cases := []struct {
		query    string
		want     pipeline.AuthDecision
		wantBody bool
	}{
		{"empty", pipeline.AuthDecision{Allow: true}, true},
		{"json-allow", pipeline.AuthDecision{Allow: true}, true},
		{"json-deny", pipeline.AuthDecision{Reason: "banned", Redirect: "rtmp://other/live/x"}, true},
		{"forbidden", pipeline.AuthDecision{Reason: "no such key"}, true},
		// A failing endpoint is an error: the host fails closed.
		{"crash", pipeline.AuthDecision{Reason: "auth plugin hooks unavailable"}, true},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			req := base
			req.Query = tc.query
			if d := p.Authorize(context.Background(), req); d != tc.want {
				t.Fatalf("decision %+v, want %+v", d, tc.want)
			}
		})
	}
	stop := base
	stop.Action = pipeline.ActionStop
	stop.Query = "empty"
	p.Notify(context.Background(), stop)

	sluicetest.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == len(cases)+1
	}, "endpoint did not receive every hook")
	mu.Lock()
	defer mu.Unlock()
	want := body{Hook: "authorize", Action: "play", Proto: "http-flv", Remote: "127.0.0.1:5555", Path: "live/cam1",
		Query: "empty", URL: "/live/cam1.flv", Pipeline: "live", Node: "n1"}
	if fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("first body %+v, want %+v", got[0], want)
	}
	if last := got[len(got)-1]; last.Hook != "notify" || last.Action != "stop" {
		t.Errorf("notify body %+v", last)
	}
}
