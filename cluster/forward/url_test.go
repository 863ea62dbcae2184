package forward

import "testing"

// TestTargetURL checks where a stream goes for a target of to, and that
// the publisher's query joins the target's own.
func TestTargetURL(t *testing.T) {
	for _, tc := range []struct {
		to, path, query, want, label string
	}{
		{"rtmp://backup:1935/live", "live/cam1", "", "rtmp://backup:1935/live/cam1", "backup:1935"},
		{"rtmp://backup/live/", "live/cam1", "", "rtmp://backup/live/cam1", "backup:1935"},
		{"rtmps://cdn.example/ingest?key=K", "live/cam1", "", "rtmps://cdn.example/ingest/cam1?key=K", "cdn.example:443"},
		{"rtmp://backup:1935/other", "live/a/b", "", "rtmp://backup:1935/other/a/b", "backup:1935"},
		{"rtmp://o:1935/live", "live/x", "token=a%2Bb", "rtmp://o:1935/live/x?token=a%2Bb", "o:1935"},
		{"rtmp://o:1935/live?via=edge1", "live/x", "token=t", "rtmp://o:1935/live/x?via=edge1&token=t", "o:1935"},
		{"rtmp://[::1]/live", "live/x", "", "rtmp://[::1]/live/x", "[::1]:1935"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			to, err := parseTarget(tc.to)
			if err != nil {
				t.Fatal(err)
			}
			before := to.String()
			u := withQuery(targetURL(to, tc.path), tc.query)
			if got := u.String(); got != tc.want {
				t.Errorf("URL %s, want %s", got, tc.want)
			}
			if got := hostPort(u); got != tc.label {
				t.Errorf("label %s, want %s", got, tc.label)
			}
			if to.String() != before {
				t.Errorf("the configured target changed from %s to %s", before, to)
			}
		})
	}
}
