// Package flvhttp is FLV over HTTP: publishers push a stream with POST or
// PUT /APP/NAME.flv (kind "flv_http"), and its client pulls a remote
// HTTP-FLV URL (Pull), which the pull and cluster stages compose.
package flvhttp

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/media/flv"
	"github.com/sluice-media/sluice/pipeline/media/flvdemux"
)

// DefaultMaxTagSize bounds one FLV tag, and so the memory a publisher can
// make Sluice allocate at once.
const DefaultMaxTagSize = 8 << 20

// maxFLVTagSize is what the 24-bit size field of a tag header can express.
const maxFLVTagSize = 1<<24 - 1

// errIdle ends a session whose source sent nothing for the idle timeout.
var errIdle = errors.New("no data within the idle timeout")

// publisher is the part of *pipeline.Publisher a session uses.
type publisher interface {
	flvdemux.Sink
	Expect(video, audio bool)
}

// copyFLV reads an FLV stream from r into d until the stream ends. It
// returns nil at a clean end between tags; a malformed stream yields a
// *flv.ParseError with the byte offset of the bad tag.
func copyFLV(r *flv.Reader, pub publisher, d *flvdemux.Demuxer) error {
	h, err := r.ReadFileHeader()
	if err != nil {
		return err
	}
	if h.HasVideo || h.HasAudio {
		// The header flags announce the tracks (FLV v10.1 §E.2), so the
		// stream is not offered to players before both have arrived.
		pub.Expect(h.HasVideo, h.HasAudio)
	}
	for {
		start := r.Offset()
		tag, err := r.ReadTag()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := d.Tag(tag); err != nil {
			var pe *flv.ParseError
			if errors.As(err, &pe) || errors.Is(err, pipeline.ErrStreamEnded) {
				return err
			}
			return &flv.ParseError{Offset: start, Reason: tagName(tag.Type) + " tag", Err: err}
		}
	}
}

func tagName(t uint8) string {
	switch t {
	case flv.TagVideo:
		return "video"
	case flv.TagAudio:
		return "audio"
	}
	return "script"
}

// causeOf names why a session ended, for logs and the closed counter:
// ended (the body ended cleanly), shutdown, timeout, truncated (the body or
// the connection ended inside a tag), protocol_error (not FLV, a lying size,
// a header that does not parse).
func causeOf(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case err == nil:
		return "ended"
	case pipeline.Stopped(ctx), errors.Is(err, pipeline.ErrStreamEnded):
		return "shutdown"
	case errors.Is(err, context.Canceled):
		// net/http cancels the request when the client's connection
		// breaks: a publisher that went away mid-stream.
		return "truncated"
	case errors.Is(err, errIdle), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "truncated"
	}
	return "protocol_error"
}

// offsetOf returns the byte offset a parse error names, or the reader's.
func offsetOf(r *flv.Reader, err error) int64 {
	var pe *flv.ParseError
	if errors.As(err, &pe) {
		return pe.Offset
	}
	return r.Offset()
}
