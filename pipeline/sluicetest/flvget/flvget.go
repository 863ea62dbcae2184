// Package flvget plays an HTTP-FLV stream for tests: one GET, and a call
// per media frame, as a player sees them. It is a package of its own
// because the FLV codec's tests use sluicetest.
package flvget

import (
	"bufio"
	"context"
	"fmt"
	"net/http"

	"github.com/sluice-media/sluice/pipeline/media/flv"
)

// Frame is one media frame of the stream.
type Frame struct {
	// Video is true for a picture, false for audio.
	Video bool
	// Key marks a keyframe.
	Key bool
	// Timestamp is the tag's timestamp in milliseconds.
	Timestamp uint32
}

// Read GETs u and calls frame for each media frame (sequence headers and
// script tags are skipped) until the body ends, frame returns an error,
// or ctx ends. It returns nil when ctx ended, the error otherwise: the
// status of an answer other than 200, a read error, or a tag that does not
// parse. client may be nil for http.DefaultClient.
func Read(ctx context.Context, client *http.Client, u string, frame func(Frame) error) error {
	if client == nil {
		client = http.DefaultClient
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	r := flv.NewReader(bufio.NewReader(resp.Body), 4<<20)
	if _, err := r.ReadFileHeader(); err != nil {
		return err
	}
	for {
		tag, err := r.ReadTag()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		f := Frame{Timestamp: tag.Timestamp}
		switch tag.Type {
		case flv.TagVideo:
			v, err := flv.ParseVideo(tag.Data)
			if err != nil {
				return err
			}
			if v.PacketType == flv.PacketSequenceStart {
				continue
			}
			f.Video, f.Key = true, v.Key
		case flv.TagAudio:
			a, err := flv.ParseAudio(tag.Data)
			if err != nil {
				return err
			}
			if a.PacketType == flv.PacketSequenceStart {
				continue
			}
		default:
			continue
		}
		if err := frame(f); err != nil {
			return err
		}
	}
}
