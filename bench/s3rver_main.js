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

// Request counts for the benchmark's "requests per object": every S3 request is classified (PutObject,
// UploadPart, HeadObject, ...) and counted per operation and User-Agent product (the first token, e.g. aws-cli,
// aiobotocore, s5cmd), so the sandbox's own calls can be told from a client's. `GET /_bench/requests` answers
// the cumulative counts as JSON (not counted itself); the bench diffs two snapshots around a command.
const counts = Object.create(null);

function operation(method, path, query, headers) {
  const slash = path.indexOf('/', 1); // path-style: /bucket[/key]
  const hasKey = slash > 0 && slash < path.length - 1;
  switch (method) {
    case 'HEAD':
      return hasKey ? 'HeadObject' : 'HeadBucket';
    case 'GET':
      if (!hasKey) return 'uploads' in query ? 'ListMultipartUploads' : 'ListObjects';
      return 'uploadId' in query ? 'ListParts' : 'GetObject';
    case 'PUT':
      if (!hasKey) return 'CreateBucket';
      if ('partNumber' in query) return 'x-amz-copy-source' in headers ? 'UploadPartCopy' : 'UploadPart';
      return 'x-amz-copy-source' in headers ? 'CopyObject' : 'PutObject';
    case 'POST':
      if ('uploads' in query) return 'CreateMultipartUpload';
      if ('uploadId' in query) return 'CompleteMultipartUpload';
      return 'delete' in query ? 'DeleteObjects' : 'Post';
    case 'DELETE':
      if ('uploadId' in query) return 'AbortMultipartUpload';
      return hasKey ? 'DeleteObject' : 'DeleteBucket';
    default:
      return method;
  }
}

async function countRequests(ctx, next) {
  if (ctx.method === 'GET' && ctx.path === '/_bench/requests') {
    ctx.type = 'application/json';
    ctx.body = JSON.stringify(counts);
    return;
  }
  const agent = (ctx.get('user-agent').split(/[\s/]/)[0] || 'unknown').toLowerCase();
  const name = `${operation(ctx.method, ctx.path, ctx.query, ctx.headers)} ${agent}`;
  counts[name] = (counts[name] || 0) + 1;
  await next();
}

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
// aws-chunked request bodies (S3's streaming uploads: `<hex size>[;ext]\r\n<data>\r\n ... 0\r\n<trailers>\r\n`,
// as transferd sends a single PUT with its SHA-256 as a trailer) are decoded as S3 decodes them (s3rver 3.7 would
// store the framing), and a SHA-256 trailer is verified and named in the answer, as S3 does; a mismatch fails the
// request.
const crypto = require('crypto');
const { Transform } = require('stream');

class AwsChunkedDecoder extends Transform {
  constructor(trailer) {
    super();
    this.trailer = trailer; // e.g. 'x-amz-checksum-sha256'
    this.sha256 = trailer === 'x-amz-checksum-sha256' ? crypto.createHash('sha256') : null;
    this.verified = null; // the trailer's value once it matched
    this.pending = Buffer.alloc(0);
    this.left = 0; // payload bytes of the current chunk still to come
    this.state = 'size'; // size -> data -> crlf -> size ... -> trailer -> done
  }

  // A bad body must fail its request, not the server: an error emitted here reaches no handler (s3rver pipes this
  // stream on, and pipe() does not forward errors) and would end the process. So the rest of the body is
  // swallowed, s3rver stores what came, and the middleware below deletes it and answers with the error.
  refuse(code, message, done) {
    this.failure = { code, message };
    this.state = 'done';
    this.pending = Buffer.alloc(0);
    done();
  }

  _transform(buf, _encoding, done) {
    if (this.state === 'done') return done(); // after a refusal, or bytes past the trailers
    let data = this.pending.length ? Buffer.concat([this.pending, buf]) : buf;
    this.pending = Buffer.alloc(0);
    while (data.length && this.state !== 'done') {
      if (this.state === 'data') {
        const take = Math.min(this.left, data.length);
        if (this.sha256) this.sha256.update(data.subarray(0, take));
        this.push(data.subarray(0, take));
        data = data.subarray(take);
        this.left -= take;
        if (this.left === 0) this.state = 'crlf';
        continue;
      }
      const end = data.indexOf('\r\n');
      if (end < 0) break;
      const line = data.subarray(0, end).toString('latin1');
      data = data.subarray(end + 2);
      if (this.state === 'crlf') this.state = 'size';
      else if (this.state === 'size') {
        this.left = parseInt(line.split(';')[0], 16);
        if (Number.isNaN(this.left)) return this.refuse('IncompleteBody', `bad aws-chunked size line ${JSON.stringify(line)}`, done);
        this.state = this.left ? 'data' : 'trailer';
      } else if (this.state === 'trailer' && line === '') this.state = 'done';
      else if (this.state === 'trailer' && this.sha256) {
        const [name, ...value] = line.split(':');
        if (name.trim().toLowerCase() !== this.trailer) continue;
        const got = this.sha256.digest('base64');
        if (value.join(':').trim() !== got) return this.refuse('BadDigest', `${this.trailer} does not match`, done);
        this.verified = got;
      }
    }
    this.pending = Buffer.from(data);
    done();
  }
}

server.middleware.unshift(async (ctx, next) => {
  const encoding = ctx.get('content-encoding');
  if (encoding.split(',').map((e) => e.trim()).includes('aws-chunked')) {
    const raw = ctx.req;
    const decoder = new AwsChunkedDecoder((raw.headers['x-amz-trailer'] || '').toLowerCase());
    raw.on('error', () => decoder.destroy()); // a client gone mid-body: s3rver's own streams end the same way
    decoder.on('error', () => {}); // never the process's end (see refuse())
    const decoded = raw.pipe(decoder);
    const headers = { ...raw.headers, 'content-length': raw.headers['x-amz-decoded-content-length'] };
    const rest = encoding.split(',').map((e) => e.trim()).filter((e) => e && e !== 'aws-chunked');
    if (rest.length) headers['content-encoding'] = rest.join(',');
    else delete headers['content-encoding'];
    Object.assign(decoded, { headers, url: raw.url, method: raw.method, socket: raw.socket,
                             connection: raw.connection, httpVersion: raw.httpVersion });
    ctx.req = ctx.request.req = decoded;
    await next();
    if (decoder.failure && ctx.status === 200) {
      const slash = ctx.path.indexOf('/', 1);
      await ctx.store.deleteObject(ctx.path.slice(1, slash), decodeURIComponent(ctx.path.slice(slash + 1)));
      ctx.status = 400;
      ctx.type = 'application/xml';
      ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n' +
        `<Error><Code>${decoder.failure.code}</Code><Message>${decoder.failure.message}</Message></Error>`;
      return;
    }
    if (ctx.status === 200 && decoder.verified) ctx.set(decoder.trailer, decoder.verified);
    return;
  }
  return next();
});

server.middleware.unshift(countRequests); // first, so every request is counted, failed ones too
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
