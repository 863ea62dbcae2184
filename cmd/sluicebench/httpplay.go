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
// compression, no overall timeout (a play lasts the whole run).
func newHTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: setupTimeout}).DialContext,
		DisableKeepAlives:     true,
		DisableCompression:    true,
		ResponseHeaderTimeout: setupTimeout,
		ReadBufferSize:        32 << 10,
	}}
}

// httpPlayer is the lean HTTP-FLV play client: a GET, then tag headers
// only. net/http undoes the chunked transfer coding.
type httpPlayer struct {
	p      *player
	client *http.Client
	url    string
	buf    []byte
}

// run plays until ctx ends or the response ends or fails.
func (h *httpPlayer) run(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
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
