package hls

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

var rewriteCases = []struct {
	name, in, want string
}{
	{
		"media playlist",
		"#EXTM3U\n#EXT-X-MAP:URI=\"p_video1_init.mp4?_HLS_x=1\"\n#EXTINF:2.00000,\np_video1_seg7.mp4\n" +
			"#EXT-X-PART:DURATION=0.20000,URI=\"p_video1_part3.mp4\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p_video1_part4.mp4\"\n",
		"#EXTM3U\n#EXT-X-MAP:URI=\"p_video1_init.mp4?S\"\n#EXTINF:2.00000,\np_video1_seg7.mp4?S\n" +
			"#EXT-X-PART:DURATION=0.20000,URI=\"p_video1_part3.mp4?S\",INDEPENDENT=YES\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p_video1_part4.mp4?S\"\n",
	},
	{
		"multivariant",
		"#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",URI=\"audio2_stream.m3u8\"\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\nvideo1_stream.m3u8?old=1\r\n",
		"#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",URI=\"audio2_stream.m3u8?T\"\r\n#EXT-X-STREAM-INF:BANDWIDTH=1\r\nvideo1_stream.m3u8?T\r\n",
	},
	{"no newline at end", "#EXTM3U\nseg.ts", "#EXTM3U\nseg.ts?S"},
	{"empty", "", ""},
}

func TestRewriteURIs(t *testing.T) {
	for _, tc := range rewriteCases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(rewriteURIs([]byte(tc.in), "", "T", "S"))
			if got != tc.want {
				t.Errorf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestStripHLSParams(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"empty", "", ""},
		{"a bare token", "allow", "allow"},
		{"kept as written, in order", "token=a%2Fb&b=2&a=1", "token=a%2Fb&b=2&a=1"},
		{"directives removed", "_HLS_msn=3&token=x&_HLS_part=1", "token=x"},
		{"an escaped directive", "%5FHLS_skip=YES&t=1", "t=1"},
		{"only directives", "_HLS_skip=YES", ""},
		{"empty elements", "&t=1&&", "t=1"},
		{"a quote is escaped", `t="x`, "t=%22x"},
		{"a bad escape is escaped", "%zz=1", "%25zz=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := stripHLSParams(tc.in); got != tc.want {
				t.Errorf("stripHLSParams(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestHalfTarget(t *testing.T) {
	for target, want := range map[string]int{"1": 1, "2": 1, "3": 2, "4": 2, "6": 3, "x": 1} {
		if got := halfTarget([]byte("#EXTM3U\n#EXT-X-TARGETDURATION:" + target + "\n")); got != want {
			t.Errorf("target %s: max-age %d, want %d", target, got, want)
		}
	}
}

// FuzzRewriteURIs checks that rewriting keeps the playlist's lines and
// tags, and gives every URI line the prefix and the right query.
func FuzzRewriteURIs(f *testing.F) {
	for _, tc := range rewriteCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := rewriteURIs(in, "../d/", "T", "S")
		if a, b := bytes.Count(in, []byte("\n")), bytes.Count(out, []byte("\n")); a != b {
			t.Fatalf("%d lines became %d", a, b)
		}
		inLines := strings.Split(string(in), "\n")
		for i, l := range strings.Split(string(out), "\n") {
			body := strings.TrimRight(l, "\r")
			switch {
			case body == "":
				if strings.TrimRight(inLines[i], "\r") != "" {
					t.Fatalf("line %d emptied", i)
				}
			case body[0] != '#':
				if !strings.HasPrefix(body, "../d/") || !(strings.HasSuffix(body, "?S") || strings.HasSuffix(body, ".m3u8?T")) {
					t.Fatalf("URI line %q", body)
				}
			case !strings.Contains(inLines[i], `URI="`):
				if l != inLines[i] {
					t.Fatalf("tag line changed: %q -> %q", inLines[i], l)
				}
			}
		}
	})
}

// FuzzSignerCheck feeds arbitrary queries to Check: none may pass unless
// it carries the signature of the path for a live window.
func FuzzSignerCheck(f *testing.F) {
	s := NewSigner([]byte("k"), time.Minute)
	f.Add(s.Query("live/a"))
	f.Add("w=1&sig=x")
	f.Add("w=%zz")
	f.Add("")
	f.Fuzz(func(t *testing.T, q string) {
		ok, until := s.Check("live/a", q)
		if !ok {
			return
		}
		if !strings.Contains(q, "sig=") || until.Before(time.Now()) {
			t.Fatalf("accepted %q (until %v)", q, until)
		}
		if s.Query("live/a") != q && !strings.Contains(q, "w=") {
			t.Fatalf("accepted %q without a window", q)
		}
	})
}

func TestSignerWindows(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	s := NewSigner([]byte("k"), time.Minute)
	s.now = func() time.Time { return now }
	q := s.Query("live/a")
	if ok, _ := s.Check("live/a", q); !ok {
		t.Fatal("fresh signature refused")
	}
	if ok, _ := s.Check("live/b", q); ok {
		t.Fatal("signature accepted for another stream")
	}
	s.now = func() time.Time { return now.Add(time.Minute) }
	if ok, _ := s.Check("live/a", q); !ok {
		t.Fatal("signature of the previous window refused")
	}
	s.now = func() time.Time { return now.Add(2 * time.Minute) }
	if ok, _ := s.Check("live/a", q); ok {
		t.Fatal("signature two windows old accepted")
	}
}
