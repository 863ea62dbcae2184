// Package stagetest checks that a block kind keeps the Stage and Binder
// contracts of package pipeline, the way net/http/httptest lets a handler
// be tested without a server. A kind package calls Conformance from one
// small test with the smallest file that builds its block:
//
//	func TestConformance(t *testing.T) {
//		k := pipeline.NewKinds()
//		rtmp.Register(k)
//		stagetest.Conformance(t, k, stagetest.Case{
//			Type: "ingest", Kind: "rtmp",
//			Body: `listen = "127.0.0.1:0"`,
//			File: `
//	server {
//	  http = "127.0.0.1:0"
//	  api  = ""
//	}
//	pipeline "live" {
//	  match = ["live/*"]
//	}`,
//		})
//	}
//
// Conformance builds the file against a pipeline.Runtime, as the server
// does, and checks, in order:
//
//  1. Build opens no socket and starts no goroutine. The goroutine count
//     must settle back to where it was, and the process must hold no
//     socket it did not hold before (read from /proc/self/fd), because
//     `sluice validate` is Build without Run and a reload builds the whole
//     new graph while the old one still serves.
//  2. Bind, then Run, then cancel. Bind (when the stage is a Binder)
//     succeeds; Run keeps running until its context is cancelled, then
//     returns nil within Case.Timeout; once it has returned, every
//     goroutine it started has exited and every socket it or Bind opened
//     is closed. Case.While can give the stage work to be in the middle of
//     when it stops: a connected client, a push whose body is still open.
//     A stage that was bound and is then run with a context already
//     cancelled, as Graph.Bind does when a later stage cannot bind, must
//     release its socket the same way.
//  3. Routes serve only while the stage runs. When the stage registered
//     routes on the shared HTTP listener, a request for Case.Probe reaches
//     the stage while it runs (the answer differs from the router's own
//     404, or has Case.ProbeStatus), and once the stage has stopped alone,
//     through pipeline.RunStage, the same request gets the router's 404:
//     the routes are gone.
//  4. Stopping one stage leaves the runtime usable. The block is built
//     again against the same Runtime while the first stage still runs,
//     as a reload builds first and swaps second; after the first stage
//     has stopped, the new one binds, runs, serves its routes and stops
//     like the first.
//
// Only the stage under test runs, never the graph's other stages (the HTTP
// listener, the API, the plugin host): the shared router is served with
// httptest instead, so that a failure names the kind.
//
// Conformance counts the goroutines and sockets of the whole test binary,
// so it must not run in parallel with other tests. The socket checks read
// /proc, so it runs on Linux only and skips elsewhere.
package stagetest
