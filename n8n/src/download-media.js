// Downloads a post's media for its branch, refusing anything that could reach inside
// the network n8n runs in (server-side request forgery): https only; the host's every
// address (checked when the connection is made, so DNS cannot change its answer after
// the check) must not be loopback, private, link-local, CGNAT, multicast, unspecified
// or a cloud metadata address; redirects are followed by hand (at most 3), each one
// checked the same way; the size is capped per channel and the content type must be an
// image or video type the channel takes. A refusal fails the post for good, naming the
// URL; no answer at all is worth another attempt.
// HERALD_MEDIA_ALLOW_HOSTS (comma-separated host:port) exempts those hosts from the
// address check and allows them over http: for a trusted internal media server, and for
// the tests' fakes on 127.0.0.1. It is empty by default.
const http = require('http');
const https = require('https');
const dns = require('dns');
const net = require('net');
// The Code node's sandbox has no global URL: the one from node's url module.
const { URL } = require('url');

const MiB = 1024 * 1024;
// Per channel: the largest file the network takes (its documented limits).
const CAPS = {
  linkedin: { image: 36 * MiB, video: 200 * MiB },
  x: { image: 5 * MiB, video: 512 * MiB },
  mastodon: { image: 16 * MiB, video: 99 * MiB },
  bluesky: { image: 1000000, video: 50 * MiB },
  facebook: { image: 10 * MiB, video: 1024 * MiB },
  instagram: { image: 8 * MiB, video: 300 * MiB },
  threads: { image: 8 * MiB, video: 1024 * MiB },
};
const TYPES = {
  image: ['image/jpeg', 'image/png', 'image/gif', 'image/webp'],
  video: ['video/mp4', 'video/quicktime'],
};
const MAX_REDIRECTS = 3;
const RETRYABLE_4XX = __RETRYABLE_4XX__; // operator/herald/statuses.py
const TIMEOUT_MS = 30000;

const input = $input.first();
const { post, idempotencyKey, dedupFile, route, channel } = input.json;
const allow = new Set(String($env.HERALD_MEDIA_ALLOW_HOSTS || '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
const cap = Number($env.HERALD_MEDIA_MAX_BYTES) || null;

class Refused extends Error {}

function ipv4Blocked(ip) {
  const [a, b] = ip.split('.').map(Number);
  return a === 0 || a === 10 || a === 127 || (a === 100 && b >= 64 && b <= 127)
    || (a === 169 && b === 254) || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)
    || (a === 192 && b === 0) || (a === 198 && (b === 18 || b === 19)) || a >= 224;
}
function blocked(ip) {
  if (net.isIPv4(ip)) return ipv4Blocked(ip);
  const v6 = ip.toLowerCase();
  const mapped = v6.match(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/);
  if (mapped) return ipv4Blocked(mapped[1]);
  // ::, ::1, fc00::/7 (unique local), fe80::/10 (link-local), ff00::/8, fd00:ec2::254 (AWS metadata)
  return v6 === '::' || v6 === '::1' || /^f[cd]/.test(v6) || /^fe[89ab]/.test(v6) || /^ff/.test(v6);
}
// Every connection resolves through this: the address it connects to is the one checked.
function safeLookup(hostname, options, callback) {
  dns.lookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err);
    const bad = addresses.find((a) => blocked(a.address));
    if (bad) return callback(new Refused(`${hostname} resolves to ${bad.address}, a private, loopback, link-local or metadata address`));
    if (options && options.all) return callback(null, addresses);
    return callback(null, addresses[0].address, addresses[0].family);
  });
}

function get(url, limit) {
  return new Promise((resolve, reject) => {
    let u;
    try { u = new URL(url); } catch (e) { return reject(new Refused(`it is not a valid URL (${e.message})`)); }
    const hostKey = `${u.hostname}:${u.port || (u.protocol === 'https:' ? 443 : 80)}`.toLowerCase();
    const trusted = allow.has(hostKey);
    if (u.protocol !== 'https:' && !(trusted && u.protocol === 'http:')) {
      return reject(new Refused(`only https media URLs are fetched, not ${u.protocol}`));
    }
    const literal = u.hostname.replace(/^\[|\]$/g, '');
    if (!trusted && net.isIP(literal) && blocked(literal)) {
      return reject(new Refused(`${literal} is a private, loopback, link-local or metadata address`));
    }
    const lib = u.protocol === 'https:' ? https : http;
    const req = lib.get(u, { timeout: TIMEOUT_MS, lookup: trusted ? undefined : safeLookup, headers: { 'user-agent': 'Herald-n8n' } }, (res) => {
      if ([301, 302, 303, 307, 308].includes(res.statusCode)) {
        res.resume();
        return resolve({ redirect: new URL(res.headers.location || '', u).toString() });
      }
      if (res.statusCode !== 200) {
        res.resume();
        return reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode }));
      }
      const declared = Number(res.headers['content-length']);
      if (declared > limit) {
        req.destroy();
        return reject(new Refused(`it is ${declared} bytes, more than ${limit} that ${channel} takes`));
      }
      const chunks = [];
      let size = 0;
      res.on('data', (chunk) => {
        size += chunk.length;
        if (size > limit) {
          req.destroy();
          reject(new Refused(`it is more than ${limit} bytes that ${channel} takes`));
        } else chunks.push(chunk);
      });
      res.on('end', () => resolve({ body: Buffer.concat(chunks), type: String(res.headers['content-type'] || '').split(';')[0].trim().toLowerCase() }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer in ${TIMEOUT_MS / 1000}s`)));
    req.on('error', reject);
  });
}

async function fetchMedia(m) {
  const kind = m.type === 'video' ? 'video' : 'image';
  const limit = cap || (CAPS[channel] || CAPS.linkedin)[kind];
  let url = m.url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const res = await get(url, limit);
    if (res.redirect) { url = res.redirect; continue; }
    const family = res.type.split('/')[0];
    if (!TYPES[family] || !TYPES[family].includes(res.type) || (m.type && m.type !== family)) {
      throw new Refused(`its content type ${JSON.stringify(res.type)} is not an ${m.type || 'image or video'} type ${channel} takes (${[...TYPES.image, ...TYPES.video].join(', ')})`);
    }
    return { body: res.body, mimeType: res.type, kind: family };
  }
  throw new Refused(`more than ${MAX_REDIRECTS} redirects`);
}

const media = [];
const binary = {};
const list = post.content.media || [];
for (const [i, m] of list.entries()) {
  let got;
  try {
    got = await fetchMedia(m);
  } catch (e) {
    let outcome;
    if (e instanceof Refused) {
      outcome = { ok: false, code: 'MediaRefused', message: `media ${m.url} refused: ${e.message}`, permanent: true };
    } else if (e.status) {
      // The media host's answer, not the network's: classified here, never as a 401
      // of the network's credential.
      const retryable = RETRYABLE_4XX.includes(e.status) || e.status >= 500;
      outcome = { ok: false, code: 'MediaDownload', message: `media ${m.url} answered ${e.message}`, permanent: !retryable };
    } else {
      outcome = { ok: false, code: 'MediaDownload', message: `media ${m.url} could not be downloaded: ${e.message}` };
    }
    return [{ json: { post, idempotencyKey, dedupFile, outcome } }];
  }
  const binaryKey = `media${i}`;
  const name = (new URL(m.url).pathname.split('/').pop() || binaryKey).slice(0, 100);
  binary[binaryKey] = await this.helpers.prepareBinaryData(got.body, name, got.mimeType);
  media.push({ url: m.url, altText: m.altText || '', mimeType: got.mimeType, type: got.kind, bytes: got.body.length, binaryKey });
}
return [{ json: { post, idempotencyKey, dedupFile, route, channel, media }, binary }];
