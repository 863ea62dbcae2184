// Package pipeline is the core of Sluice: the stream registry (Hub), the
// shared sequence of access units each stream carries, the fan-out of that
// sequence to readers, and the stage graph built from pipeline.hcl.
//
// # Streams and access units
//
// A Stream is named by its path, "app/name". It has at most one publisher at a
// time and any number of readers. The publisher writes AccessUnits: one frame of
// one Track, with DTS and PTS on one internal clock (time.Duration from the
// start of the stream's timeline). Every protocol converts at its edge: RTMP
// and FLV carry milliseconds, MPEG-TS 90 kHz ticks with a 33-bit wrap. Once
// written, an access unit is immutable, so every reader shares it.
//
// # The ring and the cursors
//
// Each stream keeps its recent access units in a ring of at most
// buffer_frames slots, and releases a unit as soon as no reader can use it:
// once it is behind the GOP cache and every reader has read it (or it is
// more than max_reader_lag behind the newest), or when the stream holds
// more than max_buffer_bytes. With readers that keep up, a stream holds
// its GOP cache and little more. Writing never
// blocks: the publisher stores the unit in the next slot and wakes the
// readers. Each reader owns a cursor, a sequence
// number into the ring, and reads forward from it at its own pace. A reader that
// falls behind by more than max_reader_lag, or that the ring laps, skips to the
// newest keyframe; one that keeps falling behind is dropped with a log line and
// a counter. A stalled reader therefore costs the stream nothing but the slots
// it already holds, and never delays the publisher or the other readers.
//
// # GOP cache
//
// The stream remembers where its last few keyframes sit in the ring. A new
// reader starts at one of them (gop_cache = N picks the Nth newest), so its
// first video frame is a keyframe and the picture appears at once. Before any
// media, readers receive the stream's metadata and each track's sequence
// header; when a track changes (new codec parameters, or a publisher that
// reconnected), the access units refer to a new *Track and readers send the
// new sequence header before the first unit that uses it.
//
// # Serialize once, write many
//
// The bytes a protocol puts on the wire for an access unit (an FLV tag, a run
// of RTMP chunks) are produced once per wire format, by the first reader that
// needs them, and cached on the unit (AccessUnit.Wire). They are a few header
// bytes plus references into the unit's payload, ready for writev, so a
// thousand readers of one format cost one encoding and no copies. Readers drain
// the ring in batches and write each batch with one net.Buffers call; in
// throughput mode the publisher wakes readers at most once per merge window,
// trading a bounded delay for far fewer wakeups and system calls.
//
// # Paced publishers
//
// In throughput mode a publisher's socket is read in bursts at most a merge
// window apart (Publisher.PaceReads): the burst is drained, the readers are
// woken once, and the connection sleeps out the window, instead of the
// connection's goroutine waking for every message that arrives.
//
// # Direct writes
//
// Waking one goroutine per player for every frame (latency mode) or every
// merge window (throughput mode) would cost more than the write itself,
// and with many players it is most of the work. So a player
// output (RTMP, HTTP-FLV) that keeps up hands its socket to the stream
// (Reader.Direct): its goroutine parks on a channel of its own, and a few
// writer goroutines per stream (one per CPU, each serving a shard of the
// direct readers, started by the first and stopped when the stream ends) put
// each new unit's shared wire bytes (in throughput mode, everything since the
// last wake-up) on every parked reader's socket with one non-blocking
// writev, the way an event loop would. The publisher only kicks the
// writers. A writer that cannot finish in that one call (the socket is
// full or takes part of it), or finds the reader lagging, a new track whose
// sequence header must go first, or the stream ended, hands the socket back
// with whatever bytes remain: the goroutine writes them, with the output's
// write timeout, before anything else, then reads the ring as any reader
// would until it has caught up and parks again. A per-reader lock held for
// each attempt makes the writers and the goroutine take turns on the socket,
// so bytes are never interleaved, lost or repeated, and a stuck player is
// still cut by its write timeout or dropped by the lag rules.
//
// # One admission path
//
// Every ingest and every output admits its clients through the Gate, never
// the Hub directly: Gate.Publish and Gate.Play check the path, resolve the
// pipeline, ask its authorizer for connect and then the action (within
// server.auth_timeout), claim the stream, and return a Publisher or Reader
// whose Finish records why the session ended and tells the authorizer the
// client left (within server.notify_timeout). A refusal is a *Refusal with
// one reason, which each protocol turns into its answer (HTTPStatus here,
// the RTMP status codes in ingest/rtmp). Sessions, refusals, closes and
// bytes are counted under the same names for every protocol.
//
// The Gate also lists every session it admitted, from admission to Finish
// (the API's clients), and ends one from outside when an operator asks:
// each protocol registers with Publisher.OnKick how its session is cut
// (its connection closed, its body's read deadline pulled in), Play does so
// for every player, and Finish then records "kicked" whatever the protocol
// saw. Stopping a stream ends it, cuts its publisher and refuses the path
// to publishers for a while (Gate.Stop). Neither costs anything per frame;
// nor does measuring a stream's bitrate and frame rate, which the
// publisher's Write adds up under the lock it holds anyway and the API
// reads on request (meter.go).
//
// Players are written by one loop, Play, for every protocol: the protocol
// gives its encoders and a Framing (HTTP chunks, or none for RTMP, whose
// chunks are in the wire bytes), and Play drains the connection, batches,
// frames, keeps the deadlines and names the cause of the end.
//
// # Waiting readers and publisher reconnects
//
// A player may arrive before its publisher; Hub.Play waits up to the
// pipeline's wait_publisher for the stream to become ready. When a publisher
// drops, its readers are held for publisher_grace: a publisher that comes back
// in time continues the same timeline and no reader notices more than a
// pause. The timeline belongs to the stream, not to a publisher: each
// track's last DTS is kept on the stream, and a new publisher (or a source
// that calls Publisher.Discontinuity, such as a relay switching upstreams) is
// placed just after the latest unit, so DTS strictly increases per track
// whatever the order and timing of publishers. A publisher whose tracks have
// the same parameters as the stream's keeps the stream's tracks, so readers
// send no new sequence header and recordings do not split.
//
// # On-demand sources
//
// A pipeline whose streams come from elsewhere (an edge) registers an
// on-demand source (Hub.OnDemand). A reader that asks for a stream nobody
// publishes (a player, an HLS playlist request) makes the hub hand the source
// a Demand; the reader waits as for any late publisher. The source is told to
// stop (Demand.Done) a linger after the last reader left, and a source that
// cannot deliver fails the demand, which ends every waiting reader at once.
//
// # Watches
//
// Sinks that act on every stream of a pipeline (HLS, recording, transcode
// hooks) Watch the hub: each stream is delivered exactly once, when it first
// becomes ready; a publisher reconnecting within its grace is the same
// stream and is not delivered again.
//
// # Stages, builds and the runtime
//
// Everything else is a Stage built from a block of pipeline.hcl by a kind
// registered in Kinds: sources publish into the Hub, sinks read from it,
// processors do both. The block types themselves come from the registered
// kinds, so a new kind needs no edit here. A Runtime (hub, HTTP router,
// metrics) lives as long as the process; a Graph is one build of the file
// against it. The graph builds every stage before any socket opens, binds
// every listener before any stage runs, and stops them all together. Each
// stage owns its HTTP routes (Routes): they serve while it runs, their
// handlers run under its context (ended with ErrStageStopped), and they
// vanish when it stops, so that one stage can be stopped or replaced alone.
package pipeline
