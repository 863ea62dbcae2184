package pull_test

import (
	"fmt"
	"testing"

	"github.com/sluice-media/sluice/pipeline/sluicetest"
)

// TestPullOverTLS mirrors a stream from an upstream over RTMPS and over
// HTTPS, whose certificate a private CA signed (tls_ca_file).
func TestPullOverTLS(t *testing.T) {
	ca := sluicetest.NewTLS(t)
	upSrv := sluicetest.Start(t, kinds(), ca.Origin(""))
	up := server{Server: upSrv, rtmp: upSrv.Addr("ingest.rtmp"), http: upSrv.Addr("server.http")}
	sluicetest.PublishLoop(t, sluicetest.Fixture("av.mp4"), "flv", "rtmp://"+up.rtmp+"/live/src")
	waitLive(t, up, "live/src")

	mirror := start(t, "127.0.0.1:0", "127.0.0.1:0", fmt.Sprintf(`
ingest "rtmp_pull" "rtmps" {
  url         = "rtmps://%s/live/src"
  stream      = "live/over-rtmps"
  tls_ca_file = %q
}
ingest "flv_pull" "https" {
  url         = "https://%s/live/src.flv"
  stream      = "live/over-https"
  tls_ca_file = %[2]q
}
`, upSrv.Addr("ingest.rtmp.tls"), ca.CAFile, upSrv.Addr("server.https")), "")
	for _, path := range []string{"live/over-rtmps", "live/over-https"} {
		waitLive(t, mirror, path)
	}
}
