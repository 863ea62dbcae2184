package flvhttp_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/config"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// tokenAuth allows token=good, redirects token=moved, denies the rest, and
// records every request and notification.
type tokenAuth struct {
	mu   sync.Mutex
	seen []pipeline.AuthRequest
}

func (a *tokenAuth) Authorize(_ context.Context, r pipeline.AuthRequest) pipeline.AuthDecision {
	a.mu.Lock()
	a.seen = append(a.seen, r)
	a.mu.Unlock()
	switch {
	case strings.Contains(r.Query, "token=good"):
		return pipeline.AuthDecision{Allow: true}
	case strings.Contains(r.Query, "token=moved") && r.Action == pipeline.ActionPublish:
		return pipeline.AuthDecision{Redirect: "http://elsewhere.example/live/a.flv"}
	case r.Action == pipeline.ActionConnect:
		return pipeline.AuthDecision{Allow: true}
	}
	return pipeline.AuthDecision{Reason: "bad token"}
}

func (a *tokenAuth) Notify(ctx context.Context, r pipeline.AuthRequest) { a.Authorize(ctx, r) }

func (a *tokenAuth) actions() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var s []string
	for _, r := range a.seen {
		s = append(s, string(r.Action)+"?"+r.Query)
	}
	return strings.Join(s, " ")
}

func TestPushAuth(t *testing.T) {
	src := `
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "flv_http" {}
pipeline "live" {
  match           = "live/*"
  publisher_grace = "0s"
}
`
	kinds := kinds()
	f, diags := config.Parse("test.hcl", []byte(src), config.Options{Kinds: kinds})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	auth := &tokenAuth{}
	g, diags := pipeline.BuildWith(f, kinds, pipeline.NewRuntime(slog.New(slog.NewTextHandler(io.Discard, nil)), nil),
		pipeline.BuildOptions{Authorizers: map[string]pipeline.Authorizer{"live": auth}})
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if err := g.Bind(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	base := "http://" + g.Addr("server.http").String() + "/live/a.flv"
	body, err := os.ReadFile("testdata/av.flv")
	if err != nil {
		t.Fatal(err)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(query string) (*http.Response, string) {
		t.Helper()
		resp, err := noRedirect.Post(base+"?"+query, "video/x-flv", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}

	if resp, b := post("token=bad"); resp.StatusCode != http.StatusForbidden || !strings.Contains(b, "bad token") {
		t.Errorf("bad token: %d %q, want 403 with the reason", resp.StatusCode, b)
	}
	if resp, _ := post("token=moved"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "http://elsewhere.example/live/a.flv" {
		t.Errorf("moved: %d to %q, want 302 to the authorizer's URL", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, b := post("token=good"); resp.StatusCode != http.StatusNoContent {
		t.Errorf("good token: %d %q, want 204 after the whole body", resp.StatusCode, b)
	}
	want := "connect?token=bad publish?token=bad connect?token=moved publish?token=moved connect?token=good publish?token=good unpublish?token=good"
	sluicetest.Eventually(t, 5*time.Second, func() bool { return auth.actions() == want }, "auth saw %q, want %q", auth.actions(), want)
	auth.mu.Lock()
	r := auth.seen[len(auth.seen)-1]
	auth.mu.Unlock()
	if r.Proto != "http-flv" || r.Path != "live/a" || r.Pipeline != "live" || !strings.HasPrefix(r.Remote, "127.0.0.1:") {
		t.Errorf("auth request %+v lacks the protocol, path, pipeline or remote", r)
	}
}
