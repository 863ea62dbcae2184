package record

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

// FLVConfig is the body of a `record "flv"` block.
type FLVConfig struct {
	// Path is the file name template; see the package doc for the
	// placeholders and the rules that keep files inside the root.
	Path string `hcl:"path,optional"`
	// Segment starts a new file at the first keyframe after this much
	// media; "0" keeps one file per publish.
	Segment string `hcl:"segment,optional"`
	// MaxSize starts a new file at the first keyframe after the file
	// reached this size ("512MB", "2GiB"); "0" sets no limit.
	MaxSize string `hcl:"max_size,optional"`
	// MaxAge deletes this block's finished files older than this ("7d",
	// "36h"), checked when the block starts and whenever a file is
	// finished; "0" keeps them.
	MaxAge string `hcl:"max_age,optional"`
	// MaxTotalSize deletes this block's oldest finished files while all of
	// them together exceed this size; "0" sets no limit.
	MaxTotalSize string `hcl:"max_total_size,optional"`
	// Fsync makes the file durable on disk while it records, not only at
	// its close: "off" (the default) or an interval such as "10s", after
	// which the next batch written is followed by an fsync. It bounds what
	// a power cut (rather than a crash of the process, which loses nothing
	// the kernel has) can take from the file.
	Fsync string `hcl:"fsync,optional"`

	s settings
}

// Defaults fills the defaults before decoding.
func (c *FLVConfig) Defaults() {
	c.Path = "recordings/{stream}/{start}.flv"
	c.Segment, c.MaxSize, c.MaxAge, c.MaxTotalSize = "0", "0", "0", "0"
	c.Fsync = fsyncOff
}

// Validate checks the fields and converts them.
func (c *FLVConfig) Validate() error {
	if err := c.s.parse(c.Path, c.Segment, c.MaxSize, c.MaxAge, c.MaxTotalSize); err != nil {
		return err
	}
	sp, err := parseFsync(c.Fsync, FormatFLV)
	if err != nil {
		return &config.FieldError{Attr: "fsync", Err: err}
	}
	c.s.sync = sp
	return nil
}

// MP4Config is the body of a `record "mp4"` block: FLVConfig's settings
// plus the fragmenting ones.
type MP4Config struct {
	// Path, Segment, MaxSize, MaxAge and MaxTotalSize are as in FLVConfig.
	Path         string `hcl:"path,optional"`
	Segment      string `hcl:"segment,optional"`
	MaxSize      string `hcl:"max_size,optional"`
	MaxAge       string `hcl:"max_age,optional"`
	MaxTotalSize string `hcl:"max_total_size,optional"`
	// Fragment is the longest a fragment may grow before it is written out.
	// Fragments are also written at every video keyframe, so a crash loses
	// at most this much media (or one GOP, if that is shorter).
	Fragment string `hcl:"fragment,optional"`
	// Faststart rewrites each cleanly finished file as a progressive MP4
	// with the moov box first, for players and editors that do not read
	// fragmented MP4 well. A crash still leaves the fragmented file.
	Faststart bool `hcl:"faststart,optional"`
	// Fsync makes the file durable on disk while it records: "off" (the
	// default), "fragment" (an fsync after every fragment written, so a
	// power cut loses at most the fragment in progress, as a crash does),
	// or an interval such as "10s" (after the first fragment written once
	// that much time has passed since the last fsync).
	Fsync string `hcl:"fsync,optional"`

	s        settings
	fragment time.Duration
}

// Defaults fills the defaults before decoding.
func (c *MP4Config) Defaults() {
	c.Path = "recordings/{stream}/{start}.mp4"
	c.Segment, c.MaxSize, c.MaxAge, c.MaxTotalSize = "0", "0", "0", "0"
	c.Fragment = "1s"
	c.Fsync = fsyncOff
}

// Validate checks the fields and converts them.
func (c *MP4Config) Validate() error {
	if err := c.s.parse(c.Path, c.Segment, c.MaxSize, c.MaxAge, c.MaxTotalSize); err != nil {
		return err
	}
	d, err := parseDuration(c.Fragment)
	if err != nil || d < 100*time.Millisecond || d > time.Minute {
		return &config.FieldError{Attr: "fragment", Err: fmt.Errorf("%q is not a duration between 100ms and 1m, such as \"1s\"", c.Fragment)}
	}
	c.fragment = d
	sp, err := parseFsync(c.Fsync, FormatMP4)
	if err != nil {
		return &config.FieldError{Attr: "fsync", Err: err}
	}
	c.s.sync = sp
	return nil
}

// The words fsync takes besides an interval.
const (
	fsyncOff      = "off"
	fsyncFragment = "fragment"
)

// Bounds of an fsync interval: below 100ms an fsync per write batch is
// what is really asked for (MP4's "fragment"), and above an hour the
// option protects next to nothing.
const (
	minFsyncInterval = 100 * time.Millisecond
	maxFsyncInterval = time.Hour
)

// syncPolicy says when a recording file is fsynced while it is written;
// every file is also fsynced when it closes.
type syncPolicy struct {
	on bool
	// every is the least time between two fsyncs: 0 syncs after every
	// write (MP4 "fragment": each write is one whole fragment).
	every time.Duration
}

// String renders the policy as the attribute would give it.
func (p syncPolicy) String() string {
	switch {
	case !p.on:
		return fsyncOff
	case p.every == 0:
		return fsyncFragment
	}
	return p.every.String()
}

// parseFsync reads the fsync attribute of a block of the given format.
func parseFsync(s, format string) (syncPolicy, error) {
	v := strings.TrimSpace(s)
	switch v {
	case fsyncOff, "":
		// "" is a config built in Go without Defaults.
		return syncPolicy{}, nil
	case fsyncFragment:
		if format == FormatMP4 {
			return syncPolicy{on: true}, nil
		}
		return syncPolicy{}, fmt.Errorf("fsync = %q is for MP4 files: FLV has no fragments; give an interval such as \"10s\", or \"off\"", s)
	}
	want := `"off" or an interval from 100ms to 1h, such as "10s"`
	if format == FormatMP4 {
		want = `"off", "fragment" (after every fragment) or an interval from 100ms to 1h, such as "10s"`
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < minFsyncInterval || d > maxFsyncInterval {
		return syncPolicy{}, fmt.Errorf("fsync = %q: want %s", s, want)
	}
	return syncPolicy{on: true, every: d}, nil
}

// settings are the validated values shared by both formats.
type settings struct {
	tmpl     *template
	segment  time.Duration
	maxSize  int64
	maxAge   time.Duration
	maxTotal int64
	sync     syncPolicy
}

func (s *settings) parse(path, segment, maxSize, maxAge, maxTotal string) error {
	t, err := parseTemplate(path)
	if err != nil {
		return &config.FieldError{Attr: "path", Err: err}
	}
	s.tmpl = t
	if s.segment, err = parseDuration(segment); err != nil {
		return &config.FieldError{Attr: "segment", Err: err}
	}
	if s.segment != 0 && s.segment < time.Second {
		return &config.FieldError{Attr: "segment", Err: fmt.Errorf("%q is shorter than 1s; segments are cut at keyframes, so use at least a GOP", segment)}
	}
	if s.maxSize, err = parseSize(maxSize); err != nil {
		return &config.FieldError{Attr: "max_size", Err: err}
	}
	if s.maxSize != 0 && s.maxSize < 64<<10 {
		return &config.FieldError{Attr: "max_size", Err: fmt.Errorf("%q is below 64KiB; a file must hold at least a GOP", maxSize)}
	}
	if s.maxAge, err = parseDuration(maxAge); err != nil {
		return &config.FieldError{Attr: "max_age", Err: err}
	}
	if s.maxTotal, err = parseSize(maxTotal); err != nil {
		return &config.FieldError{Attr: "max_total_size", Err: err}
	}
	return nil
}

// parseDuration reads a non-negative duration: "0", a Go duration ("90s",
// "1h30m"), or days in front of one ("7d", "1d12h"), because retention is
// naturally counted in days and Go durations stop at hours.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	bad := fmt.Errorf("%q is not a duration such as \"10m\", \"36h\" or \"7d\"", s)
	var days int64
	rest := s
	if i := strings.IndexByte(s, 'd'); i >= 0 {
		n, err := strconv.ParseInt(s[:i], 10, 64)
		// 106751 days is the largest whole number of days a
		// time.Duration holds.
		if err != nil || n < 0 || n > 106751 {
			return 0, bad
		}
		days, rest = n, s[i+1:]
	}
	var d time.Duration
	if rest != "" {
		var err error
		if d, err = time.ParseDuration(rest); err != nil || d < 0 {
			return 0, bad
		}
	} else if days == 0 && s != "0d" {
		return 0, bad
	}
	total := time.Duration(days) * 24 * time.Hour
	if d > math.MaxInt64-total {
		return 0, bad
	}
	return total + d, nil
}

// sizeUnits are the suffixes parseSize accepts, compared case-insensitively:
// SI multiples (kB = 1000) and IEC ones (KiB = 1024), as disks and tools use
// both.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"t", 1e12},
	{"b", 1},
}

// parseSize reads a non-negative byte count: "0", "1048576", "512MB",
// "1.5GiB".
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	bad := fmt.Errorf("%q is not a size such as \"512MB\" or \"2GiB\"", s)
	num, mult := s, int64(1)
	lower := strings.ToLower(s)
	for _, u := range sizeUnits {
		if strings.HasSuffix(lower, u.suffix) {
			num, mult = strings.TrimSpace(s[:len(s)-len(u.suffix)]), u.mult
			break
		}
	}
	if num == "" {
		return 0, bad
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 || n > math.MaxInt64/mult {
			return 0, bad
		}
		return n * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) || strings.ContainsAny(num, "xXpPnN") {
		return 0, bad
	}
	v := f * float64(mult)
	if v >= math.MaxInt64/2 {
		return 0, bad
	}
	return int64(v), nil
}

var errEmptyTemplate = errors.New("path is empty; give a template such as \"recordings/{stream}/{start}.mp4\"")
