'use strict';
// Start s3rver for the benchmark (usage: node s3rver_main.js PACKAGE_DIR DATA_DIR ADDRESS PORT [BUCKET...]).
//
// Same as `s3rver -d DATA_DIR -a ADDRESS -p PORT --silent --allow-mismatched-signatures --no-vhost-buckets
// --configure-bucket BUCKET...`, plus one change: any access key id is accepted. The Gencove sandbox hands
// its clients random temporary keys (ASIA...), and s3rver only knows "S3RVER"; it never checks SigV4
// signatures anyway, so this changes no work the server does per request.
const path = require('path');

const [pkgDir, directory, address, port, ...buckets] = process.argv.slice(2);
const S3rver = require(pkgDir);
const AWSAccount = require(path.join(pkgDir, 'lib', 'models', 'account'));

const known = AWSAccount.registry.get.bind(AWSAccount.registry);
AWSAccount.registry.get = (accessKeyId) => known(accessKeyId) || AWSAccount.DUMMY_ACCOUNT;

new S3rver({
  directory,
  address,
  port: Number(port),
  silent: true,
  allowMismatchedSignatures: true,
  vhostBuckets: false,
  configureBuckets: buckets.map((name) => ({ name, configs: [] })),
})
  .run()
  .then(({ address: host, port: bound }) => console.log(`listening ${host}:${bound}`))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
