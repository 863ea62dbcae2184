package edge

import (
	"context"
	"fmt"
	"net/url"

	"github.com/sluice-media/sluice/cluster/directory"
)

// Directory says which node of an origin cluster holds a stream. The
// stages of top-level directory blocks implement it (static peers, etcd);
// an edge block that names one with directory = "NAME" asks it before its
// upstreams.
type Directory interface {
	// Lookup returns the owner of stream path: the node whose publisher
	// holds it now. It returns an error wrapping
	// pipeline.ErrStreamNotFound when no node holds it, and another error
	// when the directory cannot answer. It is called from the edge's
	// relay goroutines, concurrently, while the directory's stage runs,
	// with a ctx that bounds the answer (the edge's idle_timeout); it must
	// not block past ctx.
	Lookup(ctx context.Context, path string) (Owner, error)
}

// Owner is the node that holds a stream, and where to pull it from: its
// Node name (server.node; an edge never pulls from a node of its own
// name, nor from one already in the request's chain), and its RTMP and
// HTTP-FLV base URLs ("rtmp://10.0.0.2:1935", "http://10.0.0.2:8080"),
// either of which may be empty. HTTP is tried first. It is the directory
// package's type, so that its stages implement Directory as they are.
type Owner = directory.Owner

// ownerUpstreams returns the owner's base URLs as upstreams, HTTP first.
// A malformed one is an error: the directory's data is wrong, which the
// operator needs to hear about.
func ownerUpstreams(o Owner) ([]*upstream, error) {
	var out []*upstream
	for _, raw := range []string{o.HTTP, o.RTMP} {
		if raw == "" {
			continue
		}
		u, err := parseUpstream(raw)
		if err != nil {
			return nil, fmt.Errorf("directory owner %s: %w", o.Node, err)
		}
		u.index, u.label = -1, "directory"
		out = append(out, u)
	}
	return out, nil
}

// routeUpstream returns the upstream a route names: its scheme and host
// (the route's path is ignored: the stream path is the one requested).
func routeUpstream(r *url.URL) *upstream {
	base := &url.URL{Scheme: r.Scheme, Host: r.Host}
	return &upstream{base: base, key: hostPort(base), label: hostPort(base), index: -1}
}

// The directory kinds are directories as they are.
var _ Directory = directory.Directory(nil)
