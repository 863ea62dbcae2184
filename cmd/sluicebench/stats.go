package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// histogram counts durations in 1 ms buckets up to its size; larger values
// land in the last bucket. Players add to it concurrently with atomics, so
// a frame costs one uncontended-ish add and no lock.
type histogram struct {
	buckets []atomic.Uint64
}

func newHistogram(max time.Duration) *histogram {
	return &histogram{buckets: make([]atomic.Uint64, max/time.Millisecond+1)}
}

func (h *histogram) add(d time.Duration) {
	i := int(d / time.Millisecond)
	if i < 0 {
		i = 0
	}
	if i >= len(h.buckets) {
		i = len(h.buckets) - 1
	}
	h.buckets[i].Add(1)
}

// count returns how many values were added.
func (h *histogram) count() uint64 {
	var n uint64
	for i := range h.buckets {
		n += h.buckets[i].Load()
	}
	return n
}

// quantile returns the q-quantile (0 < q <= 1) in milliseconds: the upper
// edge of the bucket holding it.
func (h *histogram) quantile(q float64) float64 {
	total := h.count()
	if total == 0 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	rank = max(rank, 1)
	var seen uint64
	for i := range h.buckets {
		seen += h.buckets[i].Load()
		if seen >= rank {
			return float64(i + 1)
		}
	}
	return float64(len(h.buckets))
}

// reset empties the histogram.
func (h *histogram) reset() {
	for i := range h.buckets {
		h.buckets[i].Store(0)
	}
}

// quantiles is a summary of a distribution in milliseconds.
type quantiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	Max float64 `json:"max"`
}

// summarize sorts ds and returns its quantiles (nearest rank).
func summarize(ds []time.Duration) quantiles {
	if len(ds) == 0 {
		return quantiles{}
	}
	slices.Sort(ds)
	at := func(q float64) float64 {
		i := int(q*float64(len(ds))+0.5) - 1
		i = min(max(i, 0), len(ds)-1)
		return ms(ds[i])
	}
	return quantiles{N: len(ds), P50: at(0.5), P95: at(0.95), Max: ms(ds[len(ds)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// sentLog remembers when the publisher of one stream sent each video
// frame, by its RTMP timestamp, so players can tell how long the server
// held a frame: the delay is the receipt time minus the send time of the
// same timestamp. Timestamps increase, so lookups are a binary search over
// a fixed ring.
type sentLog struct {
	mu   sync.RWMutex
	ents []sentFrame
	n    int // frames appended; the ring holds the last len(ents)
	// lead is the largest composition offset (pts - ts) seen: a frame with
	// presentation time pts was sent with a timestamp in [pts-lead, pts].
	lead uint32
}

type sentFrame struct {
	ts   uint32 // decoding timestamp, ms
	pts  uint32 // presentation timestamp, ms (ts + composition offset)
	size uint32 // RTMP message body length
	key  bool
	at   time.Duration // since the run's clock base
}

func newSentLog(size int) *sentLog { return &sentLog{ents: make([]sentFrame, size)} }

func (l *sentLog) add(f sentFrame) {
	l.mu.Lock()
	l.ents[l.n%len(l.ents)] = f
	l.n++
	if d := f.pts - f.ts; int32(d) > 0 && d > l.lead {
		l.lead = d
	}
	l.mu.Unlock()
}

// window returns the ring's oldest index and count; the caller holds mu.
func (l *sentLog) window() (first, count int) {
	count = min(l.n, len(l.ents))
	return l.n - count, count
}

// lookup finds the frame sent with timestamp ts.
func (l *sentLog) lookup(ts uint32) (sentFrame, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	first, count := l.window()
	lo, hi := 0, count
	for lo < hi {
		mid := (lo + hi) / 2
		if l.ents[(first+mid)%len(l.ents)].ts < ts {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < count {
		if f := l.ents[(first+lo)%len(l.ents)]; f.ts == ts {
			return f, true
		}
	}
	return sentFrame{}, false
}

// lookupPTS finds the frame sent with presentation time pts, for players
// whose protocol keeps presentation times but not the publisher's decoding
// timestamps (HLS: gohlslib recomputes DTS from PTS). Frames sent with a
// negative composition offset are not found.
func (l *sentLog) lookupPTS(pts uint32) (sentFrame, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	first, count := l.window()
	from := pts - min(l.lead, pts)
	lo, hi := 0, count
	for lo < hi {
		mid := (lo + hi) / 2
		if l.ents[(first+mid)%len(l.ents)].ts < from {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for i := lo; i < count; i++ {
		f := l.ents[(first+i)%len(l.ents)]
		if f.ts > pts {
			break
		}
		if f.pts == pts {
			return f, true
		}
	}
	return sentFrame{}, false
}

// newestKey returns the newest keyframe sent with a body of size bytes.
func (l *sentLog) newestKey(size uint32) (sentFrame, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	first, count := l.window()
	for i := count - 1; i >= 0; i-- {
		if f := l.ents[(first+i)%len(l.ents)]; f.key && f.size == size {
			return f, true
		}
	}
	return sentFrame{}, false
}

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat; it
// is 100 on every Linux ABI Go supports.
const clockTicks = 100

// procCPU returns the user+system CPU time process pid has used (proc(5),
// /proc/PID/stat fields 14 and 15).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime", pid)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// loadAverage returns the 1-minute load average (/proc/loadavg).
func loadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("/proc/loadavg: empty")
	}
	return strconv.ParseFloat(f[0], 64)
}

// procRSS returns the resident set size of process pid in bytes
// (/proc/PID/status VmRSS).
func procRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseUint(f[0], 10, 64)
			if err != nil {
				return 0, err
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}
