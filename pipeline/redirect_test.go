package pipeline

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// TestRedirectThroughDemand checks the path of an on-demand source's
// redirect: a Demand failed with a Refusal carrying RedirectBase reaches
// the player as that Refusal (reason "redirected"), through Hub.Play and
// the Gate, and is counted as a refusal of that reason.
func TestRedirectThroughDemand(t *testing.T) {
	h := testHub(t, StreamOptions{GOPCache: 1, BufferFrames: 64, WaitPublisher: 10 * time.Second})
	m := NewMetrics()
	g := NewGate(h, m, GateOptions{})
	feed, err := h.OnDemand("live", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	base := map[string]string{"rtmp": "rtmp://o2:1935", "http": "http://o2:8080"}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		dm, err := feed.Next(ctx)
		if err != nil {
			return
		}
		dm.Fail(&Refusal{Reason: ReasonRedirected, RedirectBase: base, Err: errors.New("held by o2")})
	})
	_, err = g.Play(ctx, Request{Path: "live/x", Client: ClientInfo{Proto: "p", Query: "token=t"}})
	var r *Refusal
	if !errors.As(err, &r) || r.Reason != ReasonRedirected || r.RedirectBase["http"] != base["http"] || r.RedirectBase["rtmp"] != base["rtmp"] {
		t.Fatalf("Play: %v (%+v); want the redirect refusal with its bases", err, r)
	}
	if n := m.CounterValue("sluice_sessions_refused_total", "p", "play", ReasonRedirected); n != 1 {
		t.Errorf("refusals counted as redirected: %d; want 1", n)
	}
}

// TestRedirectWriteHTTP checks the Location of a redirect refusal: the
// authorizer's URL as it is, or the HTTP base followed by the request's
// path and query; with neither, a 502.
func TestRedirectWriteHTTP(t *testing.T) {
	for _, tc := range []struct {
		name     string
		r        Refusal
		status   int
		location string
	}{
		{"authorizer URL", Refusal{Reason: ReasonRedirected, Redirect: "http://a/b"}, http.StatusFound, "http://a/b"},
		{"base", Refusal{Reason: ReasonRedirected, RedirectBase: map[string]string{"http": "http://o2:8080"}}, http.StatusFound, "http://o2:8080/live/x.flv?token=t"},
		{"base with slash", Refusal{Reason: ReasonRedirected, RedirectBase: map[string]string{"http": "http://o2:8080/"}}, http.StatusFound, "http://o2:8080/live/x.flv?token=t"},
		{"rtmp only", Refusal{Reason: ReasonRedirected, RedirectBase: map[string]string{"rtmp": "rtmp://o2"}}, http.StatusBadGateway, ""},
		{"not a redirect", Refusal{Reason: ReasonNotFound}, http.StatusNotFound, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			tc.r.WriteHTTP(w, httptest.NewRequest(http.MethodGet, "http://edge/live/x.flv?token=t", nil))
			if w.Code != tc.status || w.Header().Get("Location") != tc.location {
				t.Errorf("%d, Location %q; want %d, %q", w.Code, w.Header().Get("Location"), tc.status, tc.location)
			}
		})
	}
}
