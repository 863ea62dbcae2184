package forward_test

import (
	"fmt"
	"testing"

	"github.com/sluice-media/sluice/pipeline"
	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestForwardOverRTMPS pushes a stream to an RTMPS target whose
// certificate a private CA signed (tls_ca_file), and reads it back there.
func TestForwardOverRTMPS(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	k := serverKinds()
	dstSrv := sluicetest.Start(t, k, fmt.Sprintf(`
server {
  http = "127.0.0.1:0"
  api  = ""
}
ingest "rtmp" "tls" {
  listen = "127.0.0.1:0"
  tls {
    cert_file = %q
    key_file  = %q
  }
}
pipeline "fwd" {
  match = "fwd/*"
  output "http_flv" {}
}
`, ca.CertFile, ca.KeyFile))
	dst := server{Server: dstSrv, http: dstSrv.Addr("server.http")}
	src := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
  forward "rtmp" {
    to          = ["rtmps://%s/fwd"]
    tls_ca_file = %q
  }
`, dstSrv.Addr("ingest.rtmp.tls"), ca.CAFile), pipeline.BuildOptions{})
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+src.rtmp+"/live/src")
	waitLive(t, src, "live/src")
	waitLive(t, dst, "fwd/src")
	probe(t, "forwarded over RTMPS", "http://"+dst.http+"/fwd/src.flv")
}
