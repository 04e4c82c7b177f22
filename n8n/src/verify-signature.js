// Verifies Herald's Standard Webhooks signature (webhook-id, webhook-timestamp,
// webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">) over the raw body.
// The key is n8n's HERALD_SIGNING_KEY environment variable, the same value as Herald's
// HERALD_SIGNING_KEY: "whsec_<base64>" keys are base64-decoded, as Standard Webhooks says.
// n8n needs NODE_FUNCTION_ALLOW_BUILTIN=crypto and N8N_BLOCK_ENV_ACCESS_IN_NODE=false.
const crypto = require('crypto');
const TOLERANCE_SECONDS = 5 * 60;
const item = $input.first();
const headers = item.json.headers || {};
const reject = (reason) => [{ json: { verified: false, reason } }];

const secret = $env.HERALD_SIGNING_KEY;
if (!secret) return reject('n8n has no HERALD_SIGNING_KEY; cannot verify the signature');
const key = secret.startsWith('whsec_')
  ? Buffer.from(secret.slice('whsec_'.length), 'base64')
  : Buffer.from(secret, 'utf8');

const id = headers['webhook-id'];
const timestamp = headers['webhook-timestamp'];
const signatures = headers['webhook-signature'];
if (!id || !timestamp || !signatures) {
  return reject('missing webhook-id, webhook-timestamp or webhook-signature header');
}
const seconds = Number(timestamp);
if (!Number.isInteger(seconds) || Math.abs(Date.now() / 1000 - seconds) > TOLERANCE_SECONDS) {
  return reject('webhook-timestamp is not within 5 minutes of now');
}
if (!item.binary || !item.binary.data) {
  return reject("no raw body: enable the Webhook node's Raw Body option");
}
// The signature covers the exact bytes Herald sent, so verify those, never a re-encoding.
const raw = await this.helpers.getBinaryDataBuffer(0, 'data');
const expected = crypto.createHmac('sha256', key).update(`${id}.${timestamp}.`).update(raw).digest();
const valid = String(signatures)
  .split(' ')
  .some((candidate) => {
    const [version, signature] = candidate.split(',');
    if (version !== 'v1' || !signature) return false;
    const given = Buffer.from(signature, 'base64');
    return given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
if (!valid) return reject('webhook-signature does not match the body');

const post = JSON.parse(raw.toString('utf8'));
// The Idempotency-Key is opaque: compare it, never parse it.
const idempotencyKey = headers['idempotency-key'] || post.id;
return [{ json: { verified: true, idempotencyKey, post } }];
