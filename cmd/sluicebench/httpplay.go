package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
)

// newHTTPClient returns the client every HTTP-FLV player shares: one TCP
// connection per player (no keep-alive pool to share or wait on), no
// compression, no overall timeout (a play lasts the whole run). A request
// whose context carries a pacer (withPacer) gets a connection it paces.
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           pacedDialer(&net.Dialer{Timeout: setupTimeout}),
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: setupTimeout,
		ReadBufferSize:        32 << 10,
	}}
}

// pacedDialer dials with d and wraps the connection in the pacer the
// request's context carries, if any.
func pacedDialer(d *net.Dialer) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if p, ok := ctx.Value(pacerKey{}).(*pacer); ok {
			return p.wrap(c), nil
		}
		return c, nil
	}
}

// httpPlayer is the lean HTTP-FLV play client: a GET, then tag headers
// only. net/http undoes the chunked transfer coding.
type httpPlayer struct {
	p      *player
	client *http.Client
	url    string
	buf    []byte
	pace   *pacer // nil: read as data arrives
}

// run plays until ctx ends or the response ends or fails.
func (h *httpPlayer) run(ctx context.Context) error {
	req, err := http.NewRequestWithContext(withPacer(ctx, h.pace), http.MethodGet, h.url, nil)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	if h.pace != nil {
		h.pace.start()
	}
	h.p.playing.Store(true)
	tr := newTagReader(resp.Body, h.buf)
	for {
		t, err := tr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("server ended the response")
			}
			return err
		}
		h.p.bytes.Store(tr.Consumed())
		switch t.Type {
		case tagVideo:
			h.p.onVideo(classifyVideo(t.head()), t.Timestamp, t.Size)
		case tagAudio:
			h.p.audio.Add(1)
		}
	}
}
