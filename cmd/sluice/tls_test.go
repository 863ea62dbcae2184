package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// decodedFrames plays url with ffmpeg for secs seconds of media, decoding
// every frame (framemd5 hashes each decoded picture and audio frame), and
// returns how many frames of each stream it decoded. in are input options,
// such as -ca_file.
func decodedFrames(t *testing.T, url string, secs string, in ...string) map[string]int {
	t.Helper()
	n, err := decode(t, url, secs, in...)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// decode is decodedFrames returning ffmpeg's failure.
func decode(t *testing.T, url string, secs string, in ...string) (map[string]int, error) {
	t.Helper()
	ffmpeg := sluicetest.Tool(t, "ffmpeg")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"-hide_banner", "-nostdin", "-v", "error"}, in...)
	args = append(args, "-i", url, "-t", secs, "-f", "framemd5", "-")
	cmd := exec.CommandContext(ctx, ffmpeg, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ffmpeg %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	n := map[string]int{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		stream, _, _ := strings.Cut(line, ",")
		n[strings.TrimSpace(stream)]++
	}
	return n, nil
}

// TestTLSExample runs examples/tls.hcl as it is, on free loopback ports
// and with a certificate made by the test: ffmpeg publishes over RTMPS and
// plays over HTTPS, HTTP-FLV and HLS, verifying the certificate against
// the test's CA, and decodes the pictures; a certificate written over the
// files is presented by the next connections of both TLS listeners, and
// players verifying it carry on.
func TestTLSExample(t *testing.T) {
	sluicetest.Tool(t, "ffmpeg")
	ca := sluicetest.NewTLS(t)
	b, err := os.ReadFile(filepath.Join(sluicetest.Root(), "examples", "tls.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for from, to := range map[string]string{
		`":1935"`:          `"127.0.0.1:0"`,
		`":1936"`:          `"127.0.0.1:0"`,
		`":8080"`:          `"127.0.0.1:0"`,
		`":8443"`:          `"127.0.0.1:0"`,
		`":5000"`:          `"127.0.0.1:0"`,
		`"127.0.0.1:9997"`: `"127.0.0.1:0"`,
		`"tls/cert.pem"`:   `"` + ca.CertFile + `"`,
		`"tls/key.pem"`:    `"` + ca.KeyFile + `"`,
	} {
		if n := strings.Count(src, from); n != 1 {
			t.Fatalf("examples/tls.hcl has %s %d times, want once: update the test with the example", from, n)
		}
		src = strings.Replace(src, from, to, 1)
	}
	srv := sluicetest.Start(t, builtinKinds(), src)
	rtmps, https, http := srv.Addr("ingest.rtmp.tls"), srv.Addr("server.https"), srv.Addr("server.http")
	verify := []string{"-tls_verify", "1", "-ca_file", ca.CAFile}

	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmps://"+rtmps+"/live/demo")
	sluicetest.Eventually(t, 15*time.Second, func() bool {
		s := srv.Graph.Hub.Stream("live/demo")
		return s != nil && s.Info().State == "live" && len(s.Info().Tracks) == 2
	}, "the stream published over RTMPS never went live with two tracks")

	// av.mp4 is 30 fps video and 48 kHz AAC (1024 samples a frame).
	for _, tc := range []struct {
		name, url string
		in        []string
		secs      string
		minVideo  int
	}{
		{"HTTPS HTTP-FLV", "https://" + https + "/live/demo.flv", verify, "3", 75},
		{"HTTPS HLS", "https://" + https + "/live/demo/index.m3u8", verify, "3", 75},
		{"HTTP-FLV beside it", "http://" + http + "/live/demo.flv", nil, "1", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := decodedFrames(t, tc.url, tc.secs, tc.in...)
			t.Logf("decoded frames by stream: %v", n)
			if n["0"] < tc.minVideo || n["1"] < tc.minVideo {
				t.Errorf("decoded frames by stream %v in %s s, want at least %d of each", n, tc.secs, tc.minVideo)
			}
		})
	}
	t.Run("a CA that did not sign the certificate", func(t *testing.T) {
		// ffmpeg's checks are real: the same play, verified against
		// another CA, is refused.
		other := sluicetest.NewTLS(t)
		_, err := decode(t, "https://"+https+"/live/demo.flv", "1", "-tls_verify", "1", "-ca_file", other.CAFile)
		if err == nil {
			t.Fatal("ffmpeg accepted the certificate against another CA")
		}
		t.Logf("refused as expected: %v", err)
	})

	t.Run("certificate swapped on disk", func(t *testing.T) {
		next := ca.Issue("sluice-test-renewed")
		for _, addr := range []string{https, rtmps} {
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				return ca.PeerCertificate(addr).Equal(next)
			}, "%s never presented the renewed certificate", addr)
		}
		n := decodedFrames(t, "https://"+https+"/live/demo.flv", "1", verify...)
		if n["0"] < 20 {
			t.Errorf("decoded frames by stream %v over HTTPS with the renewed certificate, want at least 20 pictures", n)
		}
	})
}
