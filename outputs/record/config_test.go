package record

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/pipeline/config"
)

var durationCases = []struct {
	in   string
	want time.Duration
	ok   bool
}{
	{"0", 0, true},
	{"10m", 10 * time.Minute, true},
	{"1h30m", 90 * time.Minute, true},
	{"7d", 7 * 24 * time.Hour, true},
	{"1d12h", 36 * time.Hour, true},
	{"0d", 0, true},
	{" 2s ", 2 * time.Second, true},
	{"", 0, false},
	{"d", 0, false},
	{"10", 0, false},
	{"-1s", 0, false},
	{"-1d", 0, false},
	{"1.5d", 0, false},
	{"1d-2h", 0, false},
	{"99999999d", 0, false},
	{"106751d24h", 0, false},
	{"1w", 0, false},
}

func TestParseDuration(t *testing.T) {
	for _, tc := range durationCases {
		got, err := parseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

var sizeCases = []struct {
	in   string
	want int64
	ok   bool
}{
	{"0", 0, true},
	{"1048576", 1 << 20, true},
	{"512MB", 512e6, true},
	{"512 mb", 512e6, true},
	{"2GiB", 2 << 30, true},
	{"1.5GiB", 3 << 29, true},
	{"10k", 10e3, true},
	{"100B", 100, true},
	{"1TB", 1e12, true},
	{"", 0, false},
	{"MB", 0, false},
	{"-1MB", 0, false},
	{"1XB", 0, false},
	{"NaN", 0, false},
	{"Inf", 0, false},
	{"0x10", 0, false},
	{"99999999999TiB", 0, false},
	{"1e30", 0, false},
}

func TestParseSize(t *testing.T) {
	for _, tc := range sizeCases {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzParseSize: a size that parses is non-negative, and a plain number of
// bytes parses to itself.
func FuzzParseSize(f *testing.F) {
	for _, tc := range sizeCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("parseSize(%q) failed but returned %d", s, n)
			}
			return
		}
		if n < 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
		if v, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil && v != n {
			t.Fatalf("parseSize(%q) = %d, want %d", s, n, v)
		}
		if again, err := parseSize(strconv.FormatInt(n, 10) + "B"); err != nil || again != n {
			t.Fatalf("parseSize(%dB) = %d, %v", n, again, err)
		}
	})
}

// FuzzParseDuration: a duration that parses is non-negative, and a Go
// duration string parses as Go reads it.
func FuzzParseDuration(f *testing.F) {
	for _, tc := range durationCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("parseDuration(%q) = %v", s, d)
		}
		if !strings.Contains(s, "d") {
			if g, err := time.ParseDuration(strings.TrimSpace(s)); err == nil && g != d {
				t.Fatalf("parseDuration(%q) = %v, Go says %v", s, d, g)
			}
		}
		if again, err := parseDuration(d.String()); d != 0 && (err != nil || again != d) {
			t.Fatalf("parseDuration(%q) = %v, %v", d.String(), again, err)
		}
	})
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *MP4Config)
		attr string
	}{
		{"path", func(c *MP4Config) { c.Path = "../{name}.mp4" }, "path"},
		{"segment", func(c *MP4Config) { c.Segment = "ten minutes" }, "segment"},
		{"short segment", func(c *MP4Config) { c.Segment = "200ms" }, "segment"},
		{"max_size", func(c *MP4Config) { c.MaxSize = "lots" }, "max_size"},
		{"tiny max_size", func(c *MP4Config) { c.MaxSize = "1kB" }, "max_size"},
		{"max_age", func(c *MP4Config) { c.MaxAge = "a week" }, "max_age"},
		{"max_total_size", func(c *MP4Config) { c.MaxTotalSize = "-5GB" }, "max_total_size"},
		{"fragment", func(c *MP4Config) { c.Fragment = "10ms" }, "fragment"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c MP4Config
			c.Defaults()
			tc.edit(&c)
			err := c.Validate()
			var fe *config.FieldError
			if !errors.As(err, &fe) || fe.Attr != tc.attr {
				t.Fatalf("Validate() = %v, want a FieldError on %q", err, tc.attr)
			}
		})
	}
	var c FLVConfig
	c.Defaults()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	var m MP4Config
	m.Defaults()
	m.Segment, m.MaxSize, m.MaxAge, m.MaxTotalSize, m.Faststart = "10m", "1GB", "7d", "100GB", true
	if err := m.Validate(); err != nil {
		t.Fatalf("a full block does not validate: %v", err)
	}
}
