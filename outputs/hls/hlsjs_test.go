//go:build hlsjs

package hls_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestHLSJSInChromium plays each variant with hls.js in headless Chromium.
// The page reports the video's progress and hls.js's errors back to the
// test over HTTP. It needs Chromium and hls.js, so it is behind a build
// tag:
//
//	npm install --prefix /tmp/hlsjs hls.js@1
//	SLUICE_HLSJS=/tmp/hlsjs/node_modules/hls.js/dist/hls.min.js \
//	  go test -tags hlsjs -run TestHLSJSInChromium -v ./outputs/hls
func TestHLSJSInChromium(t *testing.T) {
	chromium := sluicetest.Tool(t, "chromium")
	lib := os.Getenv("SLUICE_HLSJS")
	if lib == "" {
		t.Skip("set SLUICE_HLSJS to the path of hls.min.js")
	}
	srv := start(t, `
pipeline "ts" {
  match = "ts/*"
  output "hls" { variant = "mpegts" }
}
pipeline "fm" {
  match = "fm/*"
  output "hls" { variant = "fmp4" }
}
pipeline "ll" {
  match = "ll/*"
  output "hls" { variant = "lowLatency" }
}
`, nil)
	for _, app := range []string{"ts", "fm", "ll"} {
		sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+srv.rtmp+"/"+app+"/web")
		waitPlaylist(t, "http://"+srv.http+"/"+app+"/web/index.m3u8")
	}

	type report struct {
		App     string   `json:"app"`
		Time    float64  `json:"t"`
		Width   int      `json:"w"`
		Errors  []string `json:"errs"`
		Latency float64  `json:"latency"`
	}
	var mu sync.Mutex
	last := map[string]report{}
	first := map[string]float64{} // first currentTime above 0, per variant
	page := `<!doctype html><html><body><script src="/hls.min.js"></script><script>
for (const app of ["ts", "fm", "ll"]) {
  const v = document.createElement("video"); v.muted = true; document.body.appendChild(v);
  const errs = [];
  const hls = new Hls({lowLatencyMode: app === "ll"});
  hls.on(Hls.Events.ERROR, (e, d) => errs.push(d.type + ":" + d.details + (d.fatal ? ":fatal" : "")));
  hls.loadSource("http://` + srv.http + `/" + app + "/web/index.m3u8");
  hls.attachMedia(v);
  hls.on(Hls.Events.MANIFEST_PARSED, () => v.play().catch(e => errs.push("play:" + e)));
  setInterval(() => fetch("/report", {method: "POST", body: JSON.stringify({app, t: v.currentTime, w: v.videoWidth, errs, latency: hls.latency || 0})}), 500);
}
</script></body></html>`
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	})
	mux.HandleFunc("/hls.min.js", func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, lib) })
	mux.HandleFunc("/report", func(w http.ResponseWriter, r *http.Request) {
		var rep report
		if json.NewDecoder(r.Body).Decode(&rep) == nil {
			mu.Lock()
			last[rep.App] = rep
			if _, ok := first[rep.App]; !ok && rep.Time > 0 {
				first[rep.App] = rep.Time
			}
			mu.Unlock()
		}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux}
	go func() { _ = hs.Serve(l) }()
	defer hs.Close()

	profile, err := os.MkdirTemp("", "sluice-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
		"--autoplay-policy=no-user-gesture-required", "--user-data-dir="+profile, "http://"+l.Addr().String()+"/")
	// Chromium starts helper processes; its own process group lets the
	// test stop them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		_ = os.RemoveAll(profile)
	}()

	sluicetest.Eventually(t, 45*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, app := range []string{"ts", "fm", "ll"} {
			if f, ok := first[app]; !ok || last[app].Time-f < 4 {
				return false
			}
		}
		return true
	}, "hls.js did not play 4 s of every variant")
	mu.Lock()
	defer mu.Unlock()
	for app, rep := range last {
		t.Logf("%s: played from %.1fs to %.1fs, width %d, hls.js latency %.2fs, errors %v", app, first[app], rep.Time, rep.Width, rep.Latency, rep.Errors)
		if rep.Width != 320 {
			t.Errorf("%s: video width %d, want 320", app, rep.Width)
		}
		for _, e := range rep.Errors {
			if strings.HasSuffix(e, ":fatal") {
				t.Errorf("%s: hls.js fatal error %s", app, e)
			}
		}
	}
}
