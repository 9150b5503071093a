'use strict';
// Start s3rver for the benchmark (usage: node s3rver_main.js PACKAGE_DIR DATA_DIR ADDRESS PORT [BUCKET...]).
//
// Same as `s3rver -d DATA_DIR -a ADDRESS -p PORT --silent --allow-mismatched-signatures --no-vhost-buckets
// --configure-bucket BUCKET...`, plus one change: any access key id is accepted. The Gencove sandbox hands
// its clients random temporary keys (ASIA...), and s3rver only knows "S3RVER"; it never checks SigV4
// signatures anyway, so this changes no work the server does per request.
const http = require('http');
const path = require('path');

const [pkgDir, directory, address, port, ...buckets] = process.argv.slice(2);
const S3rver = require(pkgDir);
const AWSAccount = require(path.join(pkgDir, 'lib', 'models', 'account'));

const known = AWSAccount.registry.get.bind(AWSAccount.registry);
AWSAccount.registry.get = (accessKeyId) => known(accessKeyId) || AWSAccount.DUMMY_ACCOUNT;

// S3 event notifications, as the real service gets them: with S3RVER_EVENTS_URL set, every ObjectCreated event
// is POSTed there (the sandbox's /_s3-events), so the sandbox learns of uploads without HEADing objects that
// may still be being written (which s3rver answers by md5-hashing the partial file).
const eventsUrl = process.env.S3RVER_EVENTS_URL;

function forward(event) {
  if (!eventsUrl) return;
  const body = JSON.stringify(event);
  const req = http.request(eventsUrl, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
  });
  req.on('error', () => {}); // best effort, like S3's own delivery
  req.end(body);
}

const server = new S3rver({
  directory,
  address,
  port: Number(port),
  silent: true,
  allowMismatchedSignatures: true,
  vhostBuckets: false,
  configureBuckets: buckets.map((name) => ({ name, configs: [] })),
});
server.on('event', (event) => {
  if (event.Records && event.Records.some((r) => r.eventName.startsWith('ObjectCreated'))) forward(event);
});
server
  .run()
  .then(({ address: host, port: bound }) => console.log(`listening ${host}:${bound}`))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
