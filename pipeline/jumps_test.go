package pipeline

import (
	"testing"
	"time"
)

// TestTimestampJumps: a publisher whose timestamps leap forward, or step
// back by more than jitter, goes on from the stream's latest unit (one
// count per leap); small steps back are clamped; a unit never lands before
// the one before it on its track.
func TestTimestampJumps(t *testing.T) {
	for _, tc := range []struct {
		name   string
		shift  time.Duration // added to the source's timestamps from the 50th unit on
		jumps  uint64
		fixups bool // units clamped instead
	}{
		{"steady", 0, 0, false},
		{"three hours on", 3 * time.Hour, 1, false},
		{"an hour back (a looped file)", -time.Hour, 1, false},
		{"half a second back (jitter)", -490 * time.Millisecond, 0, true},
		{"a pause of 4 s", 4 * time.Second, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHub(t, StreamOptions{BufferFrames: 1024})
			p, err := h.Publish("live/j", ClientInfo{Proto: "test"})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			var last [numKinds]time.Duration
			for i := range 100 {
				ts := time.Hour + time.Duration(i)*10*time.Millisecond
				if i >= 50 {
					ts += tc.shift
				}
				au := &AccessUnit{Track: testVideo, Key: i%10 == 0, DTS: ts, PTS: ts, Data: []byte{1}}
				if i%2 == 1 {
					au = &AccessUnit{Track: testAudio, Key: true, DTS: ts, PTS: ts, Data: []byte{2}}
				}
				if err := p.Write(au); err != nil {
					t.Fatal(err)
				}
				k := au.Track.Kind()
				if i > 1 && au.DTS <= last[k] {
					t.Fatalf("unit %d at %v, not after %v", i, au.DTS, last[k])
				}
				if jumped := tc.jumps > 0 && i == 50; jumped && au.DTS-last[1-k] > 100*time.Millisecond {
					t.Errorf("after the leap, unit %d at %v, %v after the newest", i, au.DTS, au.DTS-last[1-k])
				}
				last[k] = au.DTS
			}
			m := h.metrics
			if n := m.CounterValue("sluice_timestamp_jumps_total", "live"); n != tc.jumps {
				t.Errorf("%d jumps counted, want %d", n, tc.jumps)
			}
			if n := m.CounterValue("sluice_timestamp_fixups_total", "live"); (n > 0) != tc.fixups {
				t.Errorf("%d units clamped", n)
			}
		})
	}
}
