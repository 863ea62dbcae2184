package edge

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVia(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", nil},
		{"token=abc", nil},
		{"sluice_via=e1", []string{"e1"}},
		{"token=abc&sluice_via=e1%2Ce2", []string{"e1", "e2"}},
		{"sluice_via=e1,e2&x=1", []string{"e1", "e2"}},
		{"sluice_via=", nil},
	} {
		if got := viaOf(tc.query); !cmp.Equal(got, tc.want) {
			t.Errorf("viaOf(%q) = %q, want %q", tc.query, got, tc.want)
		}
	}
}

func TestUpstreamQuery(t *testing.T) {
	for _, tc := range []struct {
		query, route string
		via          []string
		want         string
	}{
		{"", "", []string{"e1"}, "sluice_via=e1"},
		{"token=a%2Bb&x", "", []string{"e1"}, "token=a%2Bb&x&sluice_via=e1"},
		{"sluice_via=e1&token=t", "", []string{"e1", "e2"}, "token=t&sluice_via=e1%2Ce2"},
		{"rtmp://origin/live&token=t", "rtmp://origin/live", []string{"e1"}, "token=t&sluice_via=e1"},
	} {
		if got := upstreamQuery(tc.query, tc.route, tc.via); got != tc.want {
			t.Errorf("upstreamQuery(%q, %q, %q) = %q, want %q", tc.query, tc.route, tc.via, got, tc.want)
		}
	}
}

func TestRouteOf(t *testing.T) {
	for _, tc := range []struct {
		query, want, el string
	}{
		{"", "", ""},
		{"token=rtmp://x/y", "", ""},
		{"rtmp://origin:1936/live", "rtmp://origin:1936/live", "rtmp://origin:1936/live"},
		{"token=t&rtmp%3A%2F%2Forigin%2Flive", "rtmp://origin/live", "rtmp%3A%2F%2Forigin%2Flive"},
		{"http://o2:8080", "http://o2:8080", "http://o2:8080"},
		{"ftp://o2", "", ""},
		{"justaword", "", ""},
	} {
		u, el := routeOf(tc.query)
		got := ""
		if u != nil {
			got = u.String()
		}
		if got != tc.want || el != tc.el {
			t.Errorf("routeOf(%q) = %q, %q; want %q, %q", tc.query, got, el, tc.want, tc.el)
		}
	}
}

func mustUpstreams(t *testing.T, raws ...string) []*upstream {
	t.Helper()
	var out []*upstream
	for i, raw := range raws {
		u, err := parseUpstream(raw)
		if err != nil {
			t.Fatal(err)
		}
		u.index = i
		u.health = &health{}
		out = append(out, u)
	}
	return out
}

func keys(list []*upstream) []string {
	var out []string
	for _, u := range list {
		out = append(out, u.key)
	}
	return out
}

// TestOrder checks the order upstreams are tried in: configured order,
// those known down after the others, the one that just failed last.
func TestOrder(t *testing.T) {
	ups := mustUpstreams(t, "rtmp://a:1", "rtmp://b:2", "http://c:3")
	down := func(i int) { ups[i].health.state.Store(stateDown) }
	reset := func() {
		for _, u := range ups {
			u.health.state.Store(stateUnknown)
		}
	}
	for _, tc := range []struct {
		name  string
		setup func()
		last  int // -1: none
		want  []string
	}{
		{"configured order", func() {}, -1, []string{"a:1", "b:2", "c:3"}},
		{"primary down", func() { down(0) }, -1, []string{"b:2", "c:3", "a:1"}},
		{"just failed goes last", func() {}, 1, []string{"a:1", "c:3", "b:2"}},
		{"down and just failed", func() { down(0) }, 1, []string{"c:3", "a:1", "b:2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reset()
			tc.setup()
			var last *upstream
			if tc.last >= 0 {
				last = ups[tc.last]
			}
			if d := cmp.Diff(tc.want, keys(order(ups, "live/x", false, last))); d != "" {
				t.Errorf("order (-want +got):\n%s", d)
			}
		})
	}
}

// TestRendezvous checks what hashing promises: streams spread over the
// upstreams; the same choice whatever the list's order; and adding an
// upstream moves only the streams it wins.
func TestRendezvous(t *testing.T) {
	three := mustUpstreams(t, "rtmp://a:1", "rtmp://b:2", "rtmp://c:3")
	shuffled := mustUpstreams(t, "rtmp://c:3", "rtmp://a:1", "rtmp://b:2")
	four := mustUpstreams(t, "rtmp://a:1", "rtmp://b:2", "rtmp://c:3", "rtmp://d:4")
	const n = 3000
	count := map[string]int{}
	moved := 0
	for i := range n {
		path := fmt.Sprintf("live/s%d", i)
		first := order(three, path, true, nil)[0].key
		count[first]++
		if got := order(shuffled, path, true, nil)[0].key; got != first {
			t.Fatalf("%s: %s with one order of the list, %s with another", path, first, got)
		}
		if got := order(four, path, true, nil)[0].key; got != first {
			if got != "d:4" {
				t.Fatalf("%s moved from %s to %s when d:4 was added", path, first, got)
			}
			moved++
		}
	}
	for k, c := range count {
		if c < n/3-n/10 || c > n/3+n/10 {
			t.Errorf("%s got %d of %d streams; want about a third", k, c, n)
		}
	}
	if moved < n/4-n/10 || moved > n/4+n/10 {
		t.Errorf("%d of %d streams moved to a fourth upstream; want about a quarter", moved, n)
	}
}
