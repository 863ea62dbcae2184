# Token auth: only publishers and players with a signed token get in.
#
#   go build -o bin/token-auth ./plugins/examples/token-auth
#   export TOKEN_AUTH_SECRET=$(head -c 32 /dev/urandom | base64)
#   sluice run examples/auth.hcl
#
# Mint tokens (HMAC-SHA256 over stream path, expiry and action):
#
#   PUB=$(bin/token-auth mint -path live/demo -ttl 24h -action publish)
#   PLAY=$(bin/token-auth mint -path 'live/*' -ttl 1h -action play)
#
# then
#
#   ffmpeg -re -i input.mp4 -c copy -f flv "rtmp://127.0.0.1/live/demo?token=$PUB"
#   ffplay "rtmp://127.0.0.1/live/demo?token=$PLAY"
#   ffplay "http://127.0.0.1:8080/live/demo.flv?token=$PLAY"
#
# A missing, wrong or expired token is refused (RTMP: the publish or play
# fails with a status error; HTTP-FLV: 403 with the reason). If the plugin
# crashes it is restarted; until then requests are refused (on_error).

server {
  http = ":8080"
  api  = "127.0.0.1:9997"   # /metrics: sluice_plugin_auth_calls_total{plugin,result}, sluice_plugin_restarts_total
}

ingest "rtmp" {
  listen = ":1935"
}

plugin "tokens" {
  command  = "./bin/token-auth"
  # The plugin inherits Sluice's environment, TOKEN_AUTH_SECRET included;
  # env = { ... } adds to it, args = [...] passes flags.
  args     = ["-secret-env", "TOKEN_AUTH_SECRET"]
  timeout  = "2s"     # per decision; a late answer counts as an error
  on_error = "deny"   # while the plugin is down, failing or late: "deny" or "allow"
  cache    = "5s"     # reuse a decision for the same client host, stream and token
}

pipeline "live" {
  match     = "live/*"
  auth      = plugin.tokens
  gop_cache = 1

  output "http_flv" {}
}
