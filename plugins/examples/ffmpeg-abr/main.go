// Command ffmpeg-abr is a Sluice transcode plugin: for every stream of its
// pipeline it runs one ffmpeg that reads the stream and publishes one
// H.264/AAC rendition per entry of renditions back to Sluice, as ordinary
// streams named NAME_RENDITION:
//
//	plugin "ffmpeg" { command = "./bin/ffmpeg-abr" }
//	pipeline "live" {
//	  match = "live/*"
//	  transcode "abr" {
//	    plugin     = plugin.ffmpeg
//	    renditions = ["720p", "360p"]   # heights; live/cam1 -> live/cam1_720p, live/cam1_360p
//	    # query    = "token=..."        # appended to the read and publish URLs, for pipelines with auth
//	  }
//	  output "hls" {}                   # the HLS master playlist groups live/cam1_* as variants
//	}
//
// Flags: -ffmpeg PATH (default "ffmpeg" from PATH), -preset (default
// "veryfast"). Keyframes are forced every 2 s so that renditions cut into
// aligned segments.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/sluice-media/sluice/plugins/sdk"
)

func main() {
	fs := flag.NewFlagSet("ffmpeg-abr", flag.ExitOnError)
	ffmpeg := fs.String("ffmpeg", "ffmpeg", "the ffmpeg binary")
	preset := fs.String("preset", "veryfast", "the libx264 preset")
	_ = fs.Parse(os.Args[1:])
	a := &abr{ffmpeg: *ffmpeg, preset: *preset, running: map[string]*job{}}
	sdk.Serve(sdk.Plugin{Transcode: a})
	// Sluice stopped the plugin: stop every encoder before exiting.
	a.stopAll()
}

type job struct {
	cmd  *exec.Cmd
	done chan struct{}
}

type abr struct {
	ffmpeg, preset string

	mu      sync.Mutex
	running map[string]*job
	wg      sync.WaitGroup
}

// rendition is one output: "720p" is 720 lines high.
type rendition struct {
	name   string
	height int
}

func parseRenditions(s string) ([]rendition, error) {
	var out []rendition
	for _, r := range strings.Split(s, ",") {
		r = strings.TrimSpace(r)
		if r == "" {
			continue
		}
		h, err := strconv.Atoi(strings.TrimSuffix(r, "p"))
		if err != nil || !strings.HasSuffix(r, "p") || h < 32 || h > 4320 || h%2 != 0 {
			return nil, fmt.Errorf("rendition %q: want an even height with a p, such as 720p", r)
		}
		out = append(out, rendition{r, h})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no renditions: set renditions = [\"720p\", ...] in the transcode block")
	}
	return out, nil
}

// args builds one ffmpeg command line with an output per rendition.
func (a *abr) args(ev sdk.StreamEvent, rs []rendition) []string {
	withQuery := func(u string) string {
		if q := ev.Options["query"]; q != "" {
			return u + "?" + q
		}
		return u
	}
	args := []string{"-hide_banner", "-loglevel", "error", "-nostdin", "-i", withQuery(ev.ReadURL)}
	name := path.Base(ev.Path)
	for _, r := range rs {
		kbps := r.height * 7 / 2 // 720p: about 2.5 Mb/s
		args = append(args,
			"-map", "0:v:0", "-map", "0:a:0?",
			"-vf", fmt.Sprintf("scale=-2:%d", r.height),
			"-c:v", "libx264", "-preset", a.preset, "-tune", "zerolatency",
			"-maxrate", fmt.Sprintf("%dk", kbps), "-bufsize", fmt.Sprintf("%dk", 2*kbps),
			"-force_key_frames", "expr:gte(t,n_forced*2)",
			"-c:a", "aac", "-b:a", "96k",
			"-f", "flv", withQuery(ev.PublishURL+"/"+name+"_"+r.name))
	}
	return args
}

func (a *abr) StreamStarted(_ context.Context, ev sdk.StreamEvent) error {
	rs, err := parseRenditions(ev.Options["renditions"])
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.running[ev.Path]; ok {
		return nil // already encoding (a repeated notice)
	}
	cmd := exec.Command(a.ffmpeg, a.args(ev, rs)...)
	cmd.Stderr = os.Stderr // Sluice logs it with plugin=NAME
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ffmpeg: %w", err)
	}
	j := &job{cmd: cmd, done: make(chan struct{})}
	a.running[ev.Path] = j
	fmt.Fprintf(os.Stderr, "encoding %s into %d renditions (pid %d)\n", ev.Path, len(rs), cmd.Process.Pid)
	a.wg.Go(func() {
		err := cmd.Wait()
		close(j.done)
		a.mu.Lock()
		if a.running[ev.Path] == j {
			delete(a.running, ev.Path)
		}
		a.mu.Unlock()
		fmt.Fprintf(os.Stderr, "ffmpeg for %s exited: %v\n", ev.Path, err)
	})
	return nil
}

func (a *abr) StreamEnded(_ context.Context, ev sdk.StreamEvent) error {
	a.mu.Lock()
	j := a.running[ev.Path]
	a.mu.Unlock()
	if j != nil {
		// ffmpeg ends by itself when its input ends; this is for a stream
		// Sluice ended while ffmpeg still waited on it.
		_ = j.cmd.Process.Kill()
		<-j.done
	}
	return nil
}

func (a *abr) stopAll() {
	a.mu.Lock()
	for _, j := range a.running {
		_ = j.cmd.Process.Kill()
	}
	a.mu.Unlock()
	a.wg.Wait()
}
