package hls

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"
)

// Signer makes and checks the signatures that segment, part and init URIs
// carry when a pipeline has an authorizer.
//
// The playlist request is authorized by the pipeline's authorizer (the
// viewer's token is in its query). The media URIs in the answer then carry
//
//	?w=WINDOW&sig=SIG
//
// where WINDOW is floor(unix_seconds / window) and SIG is the unpadded
// base64url form of the first 16 bytes of HMAC-SHA256(secret, PATH "|"
// WINDOW), PATH being the stream path ("live/cam1"). A signature is accepted
// while WINDOW is the current or the previous window, so a URI stays valid
// for between one and two windows after the playlist was served. Every viewer
// of a stream gets the same URI for a segment within a window, so a CDN keyed
// on the full URL caches one copy per segment per window; a URI copied to
// another site stops working once its window has passed (at the origin;
// signed media answers are cacheable only until then, so a CDN stops serving
// it as well). The secret is shared by every node that serves the stream, so
// that an edge accepts what an origin signed.
type Signer struct {
	secret []byte
	window time.Duration
	now    func() time.Time
}

// NewSigner returns a Signer with the given secret and window length.
func NewSigner(secret []byte, window time.Duration) *Signer {
	return &Signer{secret: secret, window: window, now: time.Now}
}

func (s *Signer) windowAt(t time.Time) int64 { return t.Unix() / int64(s.window/time.Second) }

func (s *Signer) mac(path string, w int64) string {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte(path))
	m.Write([]byte{'|'})
	m.Write(strconv.AppendInt(nil, w, 10))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

// Query returns the query string ("w=...&sig=...") that signs media URIs of
// path for the current window.
func (s *Signer) Query(path string) string {
	w := s.windowAt(s.now())
	return "w=" + strconv.FormatInt(w, 10) + "&sig=" + s.mac(path, w)
}

// Check reports whether rawQuery carries a valid signature for path, and
// until when a response to it may be cached: the end of the signature's
// validity.
func (s *Signer) Check(path, rawQuery string) (ok bool, until time.Time) {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return false, time.Time{}
	}
	w, err := strconv.ParseInt(q.Get("w"), 10, 64)
	if err != nil {
		return false, time.Time{}
	}
	now := s.windowAt(s.now())
	if w != now && w != now-1 {
		return false, time.Time{}
	}
	if !hmac.Equal([]byte(q.Get("sig")), []byte(s.mac(path, w))) {
		return false, time.Time{}
	}
	secs := int64(s.window / time.Second)
	return true, time.Unix((w+2)*secs, 0)
}
