package record

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// fillDisk makes the files being written answer every write with ENOSPC,
// as a full disk does: their descriptors now point to /dev/full.
func (r *Recorder) fillDisk(t *testing.T) {
	t.Helper()
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skipf("no /dev/full to fill a disk with: %v", err)
	}
	defer full.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, fh := range r.active {
		if err := syscall.Dup3(int(full.Fd()), int(fh.f.Fd()), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDiskFullPausesTheRecording fills the disk under a recording: the
// recording pauses with one line and one count, the file it was writing
// ends at its last whole tag or fragment (or is deleted if no media reached
// it), and once writes work again the recording resumes in a new file,
// although the stream was not published again.
func TestDiskFullPausesTheRecording(t *testing.T) {
	fx := loadFixture(t)
	for _, format := range []string{FormatFLV, FormatMP4} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			r := newRig(t, format, func(c *MP4Config) { c.Path = dir + "/{stream}-{seq}." + format })
			r.rec.retry = 0 // the disk has room again at once
			units := fx.play(3*fx.dur, nil, nil)
			p := r.publish(t, "live/full", units[:200], false)
			first := r.next(t, EventStarted)
			// Media reached the file (for MP4, a fragment) before the disk
			// fills up.
			sluicetest.Eventually(t, 10*time.Second, func() bool {
				st, err := os.Stat(first.File)
				return err == nil && st.Size() > 20<<10
			}, "no media in %s", first.File)
			r.rec.fillDisk(t)
			for _, u := range units[200:] {
				if err := p.Write(u); err != nil {
					t.Fatal(err)
				}
			}
			cut := r.next(t, EventFinished)
			if cut.File != first.File || !errors.Is(cut.Err, syscall.ENOSPC) || cut.Reason != "write error" {
				t.Fatalf("the first file ended with %+v, want a write error ENOSPC", cut)
			}
			second := r.next(t, EventStarted)
			sluicetest.Eventually(t, 10*time.Second, func() bool { return strings.Contains(r.logs.String(), "recording resumed") },
				"the recording did not resume")
			p.Close()
			if ev := r.next(t, EventFinished); ev.File != second.File || ev.Err != nil {
				t.Fatalf("the second file ended with %+v", ev)
			}
			logs := r.logs.String()
			if n := strings.Count(logs, "recording paused"); n != 1 {
				t.Errorf("%d \"recording paused\" lines, want 1", n)
			}
			if strings.Contains(logs, "recording stopped") {
				t.Errorf("a full disk stopped the recording")
			}
			if got := r.counter("sluice_record_errors_total"); !strings.HasSuffix(got, " 1") {
				t.Errorf("errors counter: %q, want 1", got)
			}
			for _, f := range []string{first.File, second.File} {
				if out := decodeErrors(t, f); out != "" {
					t.Errorf("%s does not decode: %s", f, out)
				}
			}
		})
	}
}
