// node-auth is a Sluice auth plugin written in Node.js, to show that the
// plugin protocol is plain gRPC (plugins/proto/sluice/plugin/v1/plugin.proto)
// plus go-plugin's handshake:
//
//   1. Sluice starts the process with SLUICE_PLUGIN=<cookie> and
//      PLUGIN_PROTOCOL_VERSIONS=1 in its environment.
//   2. The plugin listens on a loopback port and prints one line on stdout:
//      1|1|tcp|127.0.0.1:PORT|grpc   (go-plugin core version 1, Sluice
//      protocol version 1, network, address, protocol).
//   3. Sluice calls sluice.plugin.v1.Auth, checks grpc.health.v1.Health
//      (service "plugin"), and calls plugin.GRPCController/Shutdown to stop it.
//
// Its rule: publishing needs ?key=$NODE_AUTH_KEY on the URL; playing is open.
// Run it from a plugin block:
//
//   plugin "node" {
//     command = "node"
//     args    = ["plugins/examples/node-auth/index.js"]
//     env     = { NODE_AUTH_KEY = "letmein" }
//   }
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");

const COOKIE_KEY = "SLUICE_PLUGIN";
const COOKIE_VALUE = "6b1f0e3c9a7d4e25b8c2f1a0d3e4c5b6";
const PROTOCOL_VERSION = 1;

if (process.env[COOKIE_KEY] !== COOKIE_VALUE) {
  console.error("This is a Sluice plugin: name it in a plugin block of pipeline.hcl instead of running it.");
  process.exit(1);
}
const offered = (process.env.PLUGIN_PROTOCOL_VERSIONS || String(PROTOCOL_VERSION)).split(",");
if (!offered.includes(String(PROTOCOL_VERSION))) {
  console.error(`Sluice offers plugin protocol versions ${offered}; this plugin speaks ${PROTOCOL_VERSION}.`);
  process.exit(1);
}

const protoDir = process.env.SLUICE_PROTO_DIR || path.join(__dirname, "..", "..", "proto");
const load = (file, dirs) =>
  grpc.loadPackageDefinition(loader.loadSync(file, { includeDirs: dirs, keepCase: true, enums: String, defaults: true }));
const v1 = load("sluice/plugin/v1/plugin.proto", [protoDir]).sluice.plugin.v1;
const health = load("health.proto", [__dirname]).grpc.health.v1;
const controller = load("controller.proto", [__dirname]).plugin;

const key = process.env.NODE_AUTH_KEY || "";

function authorize(call, callback) {
  const req = call.request;
  if (req.action !== "ACTION_PUBLISH") {
    return callback(null, { allow: true });
  }
  const given = new URLSearchParams(req.query).get("key");
  if (key !== "" && given === key) {
    return callback(null, { allow: true });
  }
  console.error(`refused publish ${req.path} from ${req.remote}: wrong key`);
  callback(null, { allow: false, reason: "wrong key" });
}

const server = new grpc.Server();
server.addService(v1.Auth.service, {
  Authorize: authorize,
  Notify: (call, callback) => callback(null, {}),
});
server.addService(health.Health.service, {
  Check: (call, callback) => callback(null, { status: "SERVING" }),
});
server.addService(controller.GRPCController.service, {
  Shutdown: (call, callback) => {
    callback(null, {});
    server.tryShutdown(() => process.exit(0));
  },
});

server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error("listen:", err.message);
    process.exit(1);
  }
  process.stdout.write(`1|${PROTOCOL_VERSION}|tcp|127.0.0.1:${port}|grpc\n`);
});
