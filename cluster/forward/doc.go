// Package forward pushes the streams of a pipeline to other RTMP servers:
// the origin fan-out of the cluster, and the loop an edge uses to forward
// its publishers to an origin.
//
// # The push loop
//
// Streams watches the hub for the streams a caller selects and keeps one
// push per stream and target running with rtmp.Push, each on a goroutine
// Streams owns and waits for. A push that fails, or whose connection
// drops, is retried after an exponential backoff with jitter, so that the
// forwards of many streams to one server that restarted do not come back
// in step. Nothing here speaks RTMP: the protocol is ingest/rtmp's client.
//
// A forward holds a reader of its stream only while the target has
// accepted the publish. rtmp.Push asks for the reader after
// NetStream.Publish.Start, and finishes it when the session ends; between
// attempts there is none. So a target that is down costs the stream
// nothing: it is not a slow reader the lag rules would drop, it does not
// count among the stream's readers, and it pins no slot of the ring. Each
// new session's reader starts at the GOP cache, so the target receives the
// metadata and the sequence headers first, then a keyframe, every time.
//
// A push ends for good when its stream ends (the publisher left and did
// not come back within publisher_grace) or when the caller's context ends.
// A publisher that comes back within its grace is the same stream, and
// its forwards simply continue.
//
// # The forward "rtmp" kind
//
// Inside a pipeline, a forward "rtmp" block pushes every stream of the
// pipeline (or those its match selects) to each of its targets:
//
//	pipeline "live" {
//	  match = "live/*"
//	  forward "rtmp" {
//	    to        = ["rtmp://backup:1935/live", "rtmp://cdn.example:1935/ingest?key=K"]
//	    match     = "live/*"   # optional: a subset of the pipeline's streams
//	    retry_min = "1s"
//	    retry_max = "30s"
//	    tls_ca_file = ""       # optional: PEM CAs to trust for rtmps:// targets
//	  }
//	}
//
// An rtmps:// target is pushed to over TLS (1.2 or newer), its certificate
// verified against the system's roots, or against the CAs of tls_ca_file
// alone when it is set.
//
// Each entry of to names a server and an application; a stream APP/NAME
// is pushed to TO/NAME, with TO's query string (a stream key, a token)
// kept: live/cam1 above goes to rtmp://backup:1935/live/cam1 and to
// rtmp://cdn.example:1935/ingest/cam1?key=K.
//
// # What an operator sees
//
// Each push logs "forward connected" when a target accepts it and "forward
// dropped" (with the cause and the wait before the next attempt) when an
// attempt fails; every line carries stream and target, the URL without
// its query string, where tokens travel. sluice_forward_sessions_total and
// sluice_forward_closed_total count sessions and their ends by target, the
// host:port of the target, so that the series stay bounded however many
// streams there are.
package forward
