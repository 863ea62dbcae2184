package record

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var templateCases = []struct {
	name     string
	tmpl     string
	stream   string
	want     string // expanded path; "" when parseTemplate must fail
	root     string
	parseErr string
	expErr   string
}{
	{name: "app and name", tmpl: "recordings/{app}/{name}/{start}.flv", stream: "live/cam1", want: "recordings/live/cam1/20261125T034501Z.flv", root: "recordings"},
	{name: "stream keeps slashes", tmpl: "rec/{stream}/{seq}.mp4", stream: "live/a/b", want: "rec/live/a/b/0007.mp4", root: "rec"},
	{name: "mixed segment", tmpl: "rec/{app}-{name}_{start}.mp4", stream: "live/x", want: "rec/live-x_20261125T034501Z.mp4", root: "rec"},
	{name: "absolute", tmpl: "/var/lib/sluice/{stream}/{start}.mp4", stream: "live/x", want: "/var/lib/sluice/live/x/20261125T034501Z.mp4", root: "/var/lib/sluice"},
	{name: "dot prefix is cleaned", tmpl: "./rec//{stream}/./{seq}.flv", stream: "live/x", want: "rec/live/x/0007.flv", root: "rec"},
	{name: "placeholder first", tmpl: "{stream}.flv", stream: "live/x", want: "live/x.flv", root: "."},
	{name: "no placeholder", tmpl: "rec/all.flv", stream: "live/x", want: "rec/all.flv", root: "rec"},
	{name: "three dots are a name", tmpl: "rec/{stream}.flv", stream: "live/...", want: "rec/live/....flv", root: "rec"},
	{name: "parent in template", tmpl: "../{name}.flv", parseErr: `contains ".."`},
	{name: "parent later in template", tmpl: "rec/{app}/../../etc/{name}", parseErr: `contains ".."`},
	{name: "unknown placeholder", tmpl: "rec/{stram}.flv", parseErr: "unknown placeholder {stram}"},
	{name: "unclosed brace", tmpl: "rec/{stream.flv", parseErr: `has no "}"`},
	{name: "stray brace", tmpl: "rec/}{stream}.flv", parseErr: `has no "{"`},
	{name: "directory", tmpl: "rec/{stream}/", parseErr: "names a directory"},
	{name: "empty", tmpl: "  ", parseErr: "path is empty"},
	{name: "backslash", tmpl: `rec\{stream}.flv`, parseErr: "contains"},
	{name: "control character", tmpl: "rec/\x00{stream}.flv", parseErr: "contains"},
	{name: "stream with parent segment", tmpl: "rec/{stream}.flv", stream: "live/a/../../x", expErr: `".."`},
	{name: "stream with escaped slash", tmpl: "rec/{stream}.flv", stream: "live/..%2f..", expErr: "character '%'"},
	{name: "stream with dot segment", tmpl: "rec/{name}/{start}.flv", stream: "live/.", expErr: `"."`},
	{name: "absolute stream", tmpl: "rec/{name}.flv", stream: "/etc/passwd", expErr: "empty"},
	{name: "one segment", tmpl: "rec/{stream}.flv", stream: "x", expErr: "app/name"},
}

func TestTemplate(t *testing.T) {
	start := time.Date(2026, 11, 25, 4, 45, 1, 0, time.FixedZone("CET", 3600)) // {start} is UTC
	for _, tc := range templateCases {
		t.Run(tc.name, func(t *testing.T) {
			tm, err := parseTemplate(tc.tmpl)
			if tc.parseErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.parseErr) {
					t.Fatalf("parseTemplate(%q) = %v, want an error containing %q", tc.tmpl, err, tc.parseErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseTemplate(%q): %v", tc.tmpl, err)
			}
			if tc.root != "" && tm.root != filepath.FromSlash(tc.root) {
				t.Errorf("root = %q, want %q", tm.root, tc.root)
			}
			got, err := tm.expand(tc.stream, start, 7)
			if tc.expErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.expErr) {
					t.Fatalf("expand(%q) = %q, %v; want an error containing %q", tc.stream, got, err, tc.expErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("expand(%q): %v", tc.stream, err)
			}
			if got != filepath.FromSlash(tc.want) {
				t.Fatalf("expand(%q) = %q, want %q", tc.stream, got, tc.want)
			}
			rel, _ := filepath.Rel(tm.root, got)
			if !tm.matches(filepath.ToSlash(rel)) {
				t.Errorf("the template does not recognize its own file %q (pattern %s)", rel, tm.files)
			}
			ext := filepath.Ext(rel)
			if !tm.matches(filepath.ToSlash(strings.TrimSuffix(rel, ext) + "-3" + ext)) {
				t.Errorf("the template does not recognize its collision-renamed file")
			}
		})
	}
}

func TestTemplateMatchesOnlyItsFiles(t *testing.T) {
	tm, err := parseTemplate("recordings/{app}/{name}/{start}.mp4")
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]bool{
		"live/cam/20261125T034501Z.mp4":               true,
		"live/cam/20261125T034501Z-2.mp4":             true,
		"live/a/b/20261125T034501Z.mp4":               true,
		"live/cam/20261125T034501Z.flv":               false,
		"live/cam/notes.mp4":                          false,
		"20261125T034501Z.mp4":                        false,
		"live/cam/20261125T034501Z.mp4.faststart.tmp": false,
	} {
		if got := tm.matches(rel); got != want {
			t.Errorf("matches(%q) = %v, want %v", rel, got, want)
		}
	}
}

func TestWithin(t *testing.T) {
	for _, tc := range []struct {
		root, p string
		want    bool
	}{
		{"rec", "rec/a", true},
		{"rec", "rec", false},
		{"rec", "rec2/a", false},
		{"rec", "a", false},
		{".", "a", true},
		{".", "../a", false},
		{".", "..a", true},
		{"/", "/a", true},
		{"/srv/rec", "/srv/rec/../x", false},
	} {
		if got := within(tc.root, filepath.Clean(tc.p)); got != tc.want {
			t.Errorf("within(%q, %q) = %v, want %v", tc.root, tc.p, got, tc.want)
		}
	}
}

// FuzzTemplate checks the promise the recording root rests on: whatever
// the template and the stream path, an expansion that succeeds lies below
// the root, and the template recognizes it as one of its files.
func FuzzTemplate(f *testing.F) {
	for _, tc := range templateCases {
		f.Add(tc.tmpl, tc.stream)
	}
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f.Fuzz(func(t *testing.T, tmpl, stream string) {
		tm, err := parseTemplate(tmpl)
		if err != nil {
			return
		}
		if tm.root == ".." || strings.HasPrefix(tm.root, ".."+string(filepath.Separator)) {
			t.Fatalf("template %q has a root above the working directory: %q", tmpl, tm.root)
		}
		p, err := tm.expand(stream, start, 12)
		if err != nil {
			if !errors.Is(err, errOutsideRoot) && !strings.Contains(err.Error(), "stream path") {
				t.Fatalf("expand(%q, %q): unexpected error %v", tmpl, stream, err)
			}
			return
		}
		if !within(tm.root, p) {
			t.Fatalf("expand(%q, %q) = %q, outside the root %q", tmpl, stream, p, tm.root)
		}
		rel, err := filepath.Rel(tm.root, p)
		if err != nil {
			t.Fatal(err)
		}
		if !tm.matches(filepath.ToSlash(rel)) {
			t.Fatalf("template %q does not recognize its own file %q", tmpl, rel)
		}
	})
}
