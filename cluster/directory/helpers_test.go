package directory_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-media/sluice/cluster/directory"
	"github.com/sluice-media/sluice/ingest/rtmp"
	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

func kinds() *pipeline.Kinds {
	k := pipeline.NewKinds()
	rtmp.Register(k)
	directory.Register(k)
	return k
}

// node is one in-process Sluice with an RTMP ingest and a directory block.
type node struct {
	*sluicetest.Server
	name string
	dir  directory.Directory
}

// startNode runs a node named name with block (a directory block) at the
// top level. Its streams end as soon as their publisher leaves
// (publisher_grace = "0s"), so that a test sees an unpublish at once.
func startNode(t *testing.T, name, block string) *node {
	t.Helper()
	src := fmt.Sprintf(`
server {
  node = %q
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" {
  listen = "127.0.0.1:0"
}
pipeline "live" {
  match           = "live/*"
  publisher_grace = "0s"
}
%s
`, name, block)
	srv := sluicetest.Start(t, kinds(), src)
	n := &node{Server: srv, name: name}
	for _, st := range srv.Graph.Stages() {
		if strings.HasPrefix(st.Address, "directory.") {
			n.dir = st.Stage.(directory.Directory)
		}
	}
	if n.dir == nil {
		t.Fatal("the node has no directory stage")
	}
	return n
}

// rtmpOwner is the Owner a node announces when rtmp_url and http_url are
// not set: its RTMP ingest's bound address, and no HTTP URL, since
// server.http listens on port 0.
func (n *node) rtmpOwner() directory.Owner {
	return directory.Owner{Node: n.name, RTMP: "rtmp://" + n.Addr("ingest.rtmp")}
}

// publish makes a publisher with protocol proto publish path on n and
// waits until the stream is live; the returned func makes it leave.
func (n *node) publish(t *testing.T, path, proto string) (leave func()) {
	t.Helper()
	pub, err := n.Graph.Gate.Publish(context.Background(), pipeline.Request{
		Path:   path,
		Client: pipeline.ClientInfo{Proto: proto, Remote: "127.0.0.1:1"},
	})
	if err != nil {
		t.Fatalf("publish %s on %s: %v", path, n.name, err)
	}
	video := &pipeline.Track{Codec: pipeline.CodecH264, Config: []byte{1, 100, 0, 31}}
	if err := pub.Write(&pipeline.AccessUnit{Track: video, Key: true, Data: []byte{0, 0, 0, 1, 0x65}}); err != nil {
		t.Fatal(err)
	}
	sluicetest.Eventually(t, 5*time.Second, func() bool {
		s := n.Graph.Hub.Stream(path)
		return s != nil && s.Info().State == "live"
	}, "%s never went live on %s", path, n.name)
	done := false
	leave = func() {
		if !done {
			done = true
			pub.Close()
		}
	}
	t.Cleanup(leave)
	return leave
}

// lookup asks n's directory for path with a bounded context.
func (n *node) lookup(path string) (directory.Owner, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.dir.Lookup(ctx, path)
}

// waitOwner waits until n's directory says want holds path.
func (n *node) waitOwner(t *testing.T, path string, want directory.Owner, timeout time.Duration) {
	t.Helper()
	var got directory.Owner
	var err error
	sluicetest.Eventually(t, timeout, func() bool {
		got, err = n.lookup(path)
		return err == nil && got == want
	}, "%s's directory never named %+v for %s (last answer %+v, %v)", n.name, want, path, got, err)
}

// waitGone waits until n's directory says nobody holds path.
func (n *node) waitGone(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	var got directory.Owner
	var err error
	sluicetest.Eventually(t, timeout, func() bool {
		got, err = n.lookup(path)
		return errors.Is(err, pipeline.ErrStreamNotFound)
	}, "%s's directory still answers %+v, %v for %s", n.name, got, err, path)
}

// logged counts the log lines of srv that contain every part.
func logged(srv *sluicetest.Server, parts ...string) int {
	n := 0
	for _, l := range strings.Split(srv.Logs.String(), "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(l, p)
		}
		if ok {
			n++
		}
	}
	return n
}
