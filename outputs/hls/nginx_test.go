package hls_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// startNginx runs nginx as a caching reverse proxy in front of upstream and
// returns its host:port. Its prefix, cache and logs live in t.TempDir().
func startNginx(t *testing.T, upstream string) string {
	t.Helper()
	n := sluicetest.StartNginx(t, func(addr, dir string) string {
		if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o755); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf(`
http {
  access_log %[1]s/logs/access.log;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  proxy_cache_path %[1]s/cache levels=1:2 keys_zone=hls:10m max_size=200m inactive=10m use_temp_path=off;
  server {
    listen %[2]s;
    location / {
      proxy_pass http://%[3]s;
      proxy_http_version 1.1;
      proxy_cache hls;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 15s;
      proxy_read_timeout 30s;
      add_header X-Cache-Status $upstream_cache_status always;
    }
  }
}
`, dir, addr, upstream)
	})
	return n.Addr
}

// TestThroughNginxCache puts a real nginx proxy_cache in front of Sluice:
// ffmpeg plays through it, segments come from the cache on the second
// fetch, and media playlists are refreshed once their max-age passes.
func TestThroughNginxCache(t *testing.T) {
	t.Parallel()
	srv := start(t, `
pipeline "live" {
  match = "live/*"
  output "hls" { variant = "mpegts" }
}
pipeline "ll" {
  match = "ll/*"
  output "hls" { variant = "lowLatency" }
}
pipeline "fm" {
  match = "fm/*"
  output "hls" { variant = "fmp4" }
}
`, nil)
	cdn := startNginx(t, srv.http)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/live/cdn")
	base := "http://" + cdn + "/live/cdn/"

	index := waitPlaylist(t, base+"index.m3u8")
	media := mediaPlaylist(t, index.body)
	first := get(t, base+media)
	if first.status != http.StatusOK {
		t.Fatalf("media playlist through nginx: %d", first.status)
	}
	seg := lastSegment(t, first.body)
	a, b := get(t, base+seg), get(t, base+seg)
	if a.status != http.StatusOK || !bytes.Equal(a.body, b.body) {
		t.Fatalf("segment through nginx: %d, %d; same bytes %v", a.status, b.status, bytes.Equal(a.body, b.body))
	}
	if got := a.header.Get("X-Cache-Status"); got != "MISS" {
		t.Errorf("first segment fetch: X-Cache-Status %q, want MISS", got)
	}
	if got := b.header.Get("X-Cache-Status"); got != "HIT" {
		t.Errorf("second segment fetch: X-Cache-Status %q, want HIT", got)
	}

	// The playlist is a HIT within its max-age, then refreshed from Sluice
	// (EXPIRED) with newer segments.
	again := get(t, base+media)
	if got := again.header.Get("X-Cache-Status"); got != "HIT" {
		t.Errorf("playlist within max-age: X-Cache-Status %q, want HIT", got)
	}
	var refreshed response
	sluicetest.Eventually(t, 15*time.Second, func() bool {
		refreshed = get(t, base+media)
		st := refreshed.header.Get("X-Cache-Status")
		return (st == "EXPIRED" || st == "MISS") && !bytes.Equal(refreshed.body, first.body)
	}, "the playlist was never refreshed through nginx (last X-Cache-Status %q)", refreshed.header.Get("X-Cache-Status"))

	// A blocking reload is cached under its full URL, query included: a
	// second viewer asking for the same part gets nginx's copy.
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/ll/cdn")
	llBase := "http://" + cdn + "/ll/cdn/"
	llMedia := mediaPlaylist(t, waitPlaylist(t, llBase+"index.m3u8").body)
	var pl playlist.Media
	if err := pl.Unmarshal(get(t, llBase+llMedia).body); err != nil {
		t.Fatal(err)
	}
	q := fmt.Sprintf("?_HLS_msn=%d&_HLS_part=%d", pl.MediaSequence+len(pl.Segments), len(pl.Parts))
	b1, b2 := get(t, llBase+llMedia+q), get(t, llBase+llMedia+q)
	if b1.status != http.StatusOK || b1.header.Get("X-Cache-Status") != "MISS" || b2.header.Get("X-Cache-Status") != "HIT" || !bytes.Equal(b1.body, b2.body) {
		t.Errorf("blocking reload through nginx: %d %q then %q", b1.status, b1.header.Get("X-Cache-Status"), b2.header.Get("X-Cache-Status"))
	}
	other := get(t, llBase+llMedia+q+"&x=1")
	if got := other.header.Get("X-Cache-Status"); got != "MISS" {
		t.Errorf("another query: X-Cache-Status %q, want MISS (the key includes the query)", got)
	}

	if r := get(t, "http://"+cdn+"/live/none/index.m3u8"); r.status != http.StatusNotFound {
		t.Errorf("missing stream through nginx: %d", r.status)
	}
	// Every variant plays through the cache.
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/fm/cdn")
	waitPlaylist(t, "http://"+cdn+"/fm/cdn/index.m3u8")
	for _, u := range []string{base, llBase, "http://" + cdn + "/fm/cdn/"} {
		stderr := sluicetest.Decode(t, u+"index.m3u8", 40*time.Second, "-t", "6")
		if bad := decodeErrors(stderr); len(bad) > 0 {
			t.Errorf("ffmpeg through nginx (%s) reported:\n%s", u, strings.Join(bad, "\n"))
		}
	}
}
