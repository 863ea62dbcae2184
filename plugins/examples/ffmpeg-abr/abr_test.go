package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/sluice-media/sluice/plugins/sdk"
)

func TestParseRenditions(t *testing.T) {
	cases := []struct {
		in      string
		want    []rendition
		wantErr bool
	}{
		{"720p,360p", []rendition{{"720p", 720}, {"360p", 360}}, false},
		{" 144p ", []rendition{{"144p", 144}}, false},
		{"", nil, true},
		{"720", nil, true},
		{"721p", nil, true},
		{"hdp", nil, true},
		{"99999p", nil, true},
	}
	for _, tc := range cases {
		got, err := parseRenditions(tc.in)
		if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
			t.Errorf("parseRenditions(%q) = %v, %v; want %v, err=%v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestArgs(t *testing.T) {
	a := &abr{ffmpeg: "ffmpeg", preset: "veryfast"}
	ev := sdk.StreamEvent{Path: "live/cam1", ReadURL: "rtmp://127.0.0.1:1935/live/cam1", PublishURL: "rtmp://127.0.0.1:1935/live",
		Options: map[string]string{"query": "token=abc"}}
	args := strings.Join(a.args(ev, []rendition{{"720p", 720}, {"360p", 360}}), " ")
	for _, want := range []string{
		"-i rtmp://127.0.0.1:1935/live/cam1?token=abc",
		"-vf scale=-2:720", "-vf scale=-2:360",
		"-f flv rtmp://127.0.0.1:1935/live/cam1_720p?token=abc",
		"-f flv rtmp://127.0.0.1:1935/live/cam1_360p?token=abc",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("ffmpeg args lack %q:\n%s", want, args)
		}
	}
}

func FuzzParseRenditions(f *testing.F) {
	for _, s := range []string{"720p,360p", " 144p ", "", "721p", "1e3p"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := parseRenditions(s)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.height < 32 || r.height > 4320 || r.height%2 != 0 || r.name == "" || strings.ContainsAny(r.name, ", /?") {
				t.Fatalf("accepted rendition %+v from %q", r, s)
			}
		}
	})
}
