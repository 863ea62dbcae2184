package hls_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func segmentPrefix(t *testing.T, media []byte) string {
	t.Helper()
	seg := lastSegment(t, media)
	return seg[:strings.IndexByte(seg, '_')]
}

func muxers(t *testing.T, srv *server) string {
	t.Helper()
	var b bytes.Buffer
	if err := srv.metrics.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "sluice_hls_muxers{") {
			return l[strings.LastIndexByte(l, ' ')+1:]
		}
	}
	return ""
}

// TestRepublish follows one stream path through a publisher reconnect
// within publisher_grace (same muxer, same segment names continue), the end
// of the stream (the muxer serves its last segments for close_after, then
// goes) and a later publish (a new muxer whose segment names differ).
func TestRepublish(t *testing.T) {
	t.Parallel()
	srv := start(t, `
pipeline "live" {
  match           = "live/*"
  publisher_grace = "3s"
  output "hls" {
    variant     = "mpegts"
    close_after = "2s"
  }
}
`, nil)
	url := "rtmp://" + srv.rtmp + "/live/re"
	base := "http://" + srv.http + "/live/re/"
	pub := sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", url)
	media := mediaPlaylist(t, waitPlaylist(t, base+"index.m3u8").body)
	first := waitPlaylist(t, base+media)
	prefix := segmentPrefix(t, first.body)
	firstSeg := lastSegment(t, first.body)

	// Reconnect within the grace: the same muxer carries on.
	_ = pub.Process.Kill()
	_ = pub.Wait()
	pub = sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", url)
	var r response
	sluicetest.Eventually(t, 20*time.Second, func() bool {
		r = get(t, base+media)
		return r.status == http.StatusOK && !strings.Contains(string(r.body), firstSeg) && lastSegment(t, r.body) != firstSeg
	}, "no new segment after the reconnect:\n%s", r.body)
	if p := segmentPrefix(t, r.body); p != prefix {
		t.Fatalf("segment prefix changed across a reconnect within grace: %s -> %s", prefix, p)
	}

	// The publisher goes for good: the stream ends after the grace, the
	// muxer serves its last segments for close_after, then 404.
	_ = pub.Process.Kill()
	_ = pub.Wait()
	sluicetest.Eventually(t, 10*time.Second, func() bool { return srv.hub.Stream("live/re") == nil }, "the stream never ended")
	if r := get(t, base+media); r.status != http.StatusOK || segmentPrefix(t, r.body) != prefix {
		t.Errorf("right after the end: %d, want the last playlist", r.status)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return get(t, base+media).status == http.StatusNotFound }, "the muxer outlived close_after")

	// A new publish gets a new muxer: no segment name is reused.
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", url)
	again := waitPlaylist(t, base+media)
	if p := segmentPrefix(t, again.body); p == prefix {
		t.Fatalf("republished stream reuses segment prefix %s", p)
	}
}

// TestOnDemandMuxer checks always = false: no muxer until a request, one
// after it, none again after close_after without requests.
func TestOnDemandMuxer(t *testing.T) {
	t.Parallel()
	srv := start(t, `
pipeline "live" {
  match = "live/*"
  output "hls" {
    variant     = "fmp4"
    always      = false
    close_after = "2s"
  }
}
`, nil)
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/live/od")
	sluicetest.Eventually(t, 10*time.Second, func() bool {
		s := srv.hub.Stream("live/od")
		return s != nil && len(s.Info().Tracks) == 2
	}, "stream never went live")
	if got := muxers(t, srv); got != "0" {
		t.Fatalf("muxers before any request = %s, want 0", got)
	}
	r := get(t, "http://"+srv.http+"/live/od/index.m3u8")
	if r.status != http.StatusOK {
		t.Fatalf("first request: %d %s (it should wait for the first segment)", r.status, r.body)
	}
	if got := muxers(t, srv); got != "1" {
		t.Fatalf("muxers after a request = %s, want 1", got)
	}
	sluicetest.Eventually(t, 10*time.Second, func() bool { return muxers(t, srv) == "0" }, "the idle muxer was never closed")
}
