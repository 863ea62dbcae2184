package edge_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
	"github.com/sluice-media/sluice/pipeline/sluicetest/feed"
)

// TestFanInMixed plays one stream on an edge to 100 viewers at once, of
// three protocols (RTMP, HTTP-FLV and HLS), all arriving together on a
// cold edge: every one receives media, and the origin admits exactly one
// play session from the edge, whichever protocol's request started the
// pull and however the first requests raced.
func TestFanInMixed(t *testing.T) {
	o := origin(t, "o1", "")
	feed.Run(t, o.Graph.Gate, []string{"live/x"}, feed.Options{})
	waitLive(t, o, "live/x")
	e := edgeServer(t, "e1", fmt.Sprintf(`upstreams = ["rtmp://%s"]`, o.rtmp), "")
	before := playSessions(o, "rtmp")

	// 10 HLS viewers and 90 FLV players, half over each protocol. The
	// HLS viewers have a client of their own whose idle connections are
	// closed before the edge stops: when a request is served on a
	// connection another one freed, the Transport still pools the one it
	// was dialing for it, and the edge's HTTP server waits up to 5 s on
	// such a connection that never sent a byte (net/http treats StateNew
	// as active for its first 5 s) before it can shut down.
	const hlsViewers = 10
	hlsErrs := make([]error, hlsViewers)
	hlsClient := &http.Client{Transport: &http.Transport{}}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); wg.Wait(); hlsClient.CloseIdleConnections() }()
	for i := range hlsViewers {
		wg.Go(func() { hlsErrs[i] = hlsView(ctx, hlsClient, "http://"+e.http+"/live/x/index.m3u8") })
	}
	var players []*player
	for i := range 100 - hlsViewers {
		u := "rtmp://" + e.rtmp + "/live/x"
		if i%2 == 1 {
			u = "http://" + e.http + "/live/x.flv"
		}
		players = append(players, play(t, ctx, u))
	}
	for _, p := range players {
		p.waitFirst(t, 20*time.Second)
	}
	wg.Wait()
	for i, err := range hlsErrs {
		if err != nil {
			t.Errorf("HLS viewer %d: %v", i, err)
		}
	}

	if got := playSessions(o, "rtmp") - before; got != 1 {
		t.Errorf("the origin admitted %d RTMP play sessions for the edge's 100 viewers; want 1", got)
	}
	if got := playSessions(o, "http-flv"); got != 0 {
		t.Errorf("the origin admitted %d HTTP-FLV play sessions from an RTMP-only edge; want 0", got)
	}
	if r := e.edgeStage(t).Relays(); len(r) != 1 || r[0].Stream != "live/x" || r[0].State != "live" || r[0].UpstreamIndex != 0 {
		t.Errorf("relays = %+v; want one live relay of live/x from upstream 0", r)
	}
}

// hlsView is a minimal HLS viewer: it fetches the multivariant playlist
// u, the media playlist it names first, and that playlist's first media
// URI (a segment or a part) with c, and checks the media is MPEG-TS (every
// packet starts with the sync byte 0x47, ISO/IEC 13818-1 2.4.3.2).
func hlsView(ctx context.Context, c *http.Client, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	playlist, err := firstURI(ctx, c, u)
	if err != nil {
		return err
	}
	media, err := firstURI(ctx, c, playlist)
	if err != nil {
		return err
	}
	body, err := get(ctx, c, media)
	if err != nil {
		return err
	}
	if len(body) < 188 || body[0] != 0x47 {
		return fmt.Errorf("%s: %d bytes not starting with an MPEG-TS sync byte", media, len(body))
	}
	return nil
}

// firstURI fetches the playlist u and returns its first URI line (RFC
// 8216 section 4.1: lines not starting with "#" are URIs), resolved
// against u.
func firstURI(ctx context.Context, c *http.Client, u string) (string, error) {
	body, err := get(ctx, c, u)
	if err != nil {
		return "", err
	}
	base, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		ref, err := url.Parse(l)
		if err != nil {
			return "", fmt.Errorf("%s: URI %q: %v", u, l, err)
		}
		return base.ResolveReference(ref).String(), nil
	}
	return "", fmt.Errorf("%s: no URI in\n%s", u, body)
}

// get returns the body of a 200 answer to GET u with c.
func get(ctx context.Context, c *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %s", u, resp.Status)
	}
	return body, nil
}

// TestTwentyStreamsOneConnection plays 20 streams of one origin through
// one edge over an http:// upstream: the 20 pulls are multiplexed onto one
// cleartext HTTP/2 connection (the default), so the origin accepts exactly
// one TCP connection from the edge while all 20 relays are live.
func TestTwentyStreamsOneConnection(t *testing.T) {
	o := origin(t, "o1", "")
	var paths []string
	for i := range 20 {
		paths = append(paths, fmt.Sprintf("live/s%02d", i))
	}
	feed.Run(t, o.Graph.Gate, paths, feed.Options{})
	for _, p := range paths {
		waitLive(t, o, p)
	}
	// The edge's health check is a TCP dial too: one at start (counted in
	// want below), then none for the test's length.
	conns := func() uint64 { return o.Graph.Metrics.CounterValue("sluice_http_connections_total") }
	before, sessions := conns(), playSessions(o, "http-flv")
	e := edgeServer(t, "e1", fmt.Sprintf(`
    upstreams       = ["http://%s"]
    health_interval = "1h"
`, o.http), "")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var players []*player
	for _, p := range paths {
		players = append(players, play(t, ctx, "http://"+e.http+"/"+p+".flv"))
	}
	for _, p := range players {
		p.waitFirst(t, 20*time.Second)
	}

	relays := e.edgeStage(t).Relays()
	if len(relays) != len(paths) {
		t.Errorf("%d relays, want %d: %+v", len(relays), len(paths), relays)
	}
	for _, r := range relays {
		if r.State != "live" || r.UpstreamIndex != 0 {
			t.Errorf("relay %s: state %q from upstream %d; want live from upstream 0", r.Stream, r.State, r.UpstreamIndex)
		}
	}
	sluicetest.Eventually(t, 5*time.Second, func() bool { return conns()-before >= 2 },
		"the origin accepted %d connections, want 2", conns()-before)
	if got := conns() - before; got != 2 {
		t.Errorf("the origin accepted %d connections for the edge's %d pulls and its health check, want 2 (one for all the pulls)", got, len(paths))
	}
	if got := playSessions(o, "http-flv") - sessions; got != uint64(len(paths)) {
		t.Errorf("the origin admitted %d HTTP-FLV play sessions, want %d (one per stream)", got, len(paths))
	}
}
