// Mastodon: its answer to POST /api/v1/statuses as the branch's outcome. 200 is the
// status (also for a repeat of the same Idempotency-Key: the first one). 429: the
// X-RateLimit-Reset header is an ISO 8601 time.
const CREDENTIAL = 'Mastodon (Herald)';
const res = $input.first().json;
if (res.outcome) return [{ json: { outcome: res.outcome } }];
const status = res.statusCode;
const headers = res.headers || {};
const body = res.body && typeof res.body === 'object' ? res.body : {};
if (status === 200 && body.id) {
  const outcome = { ok: true, externalId: String(body.id) };
  if (body.url) outcome.externalUrl = body.url;
  return [{ json: { outcome } }];
}
const detail = body.error || (res.error && !status ? res.error.message : null) || JSON.stringify(res.body || 'no body');
const outcome = {
  ok: false,
  code: status ? `Mastodon${status}` : 'MastodonUnreachable',
  message: `Mastodon answered ${status ? `HTTP ${status}` : 'nothing'}: ${detail}`,
  credential: CREDENTIAL,
};
if (status) outcome.status = status;
if (status === 429) {
  const reset = Date.parse(headers['x-ratelimit-reset'] || '');
  const retryAfter = Number(headers['retry-after']);
  if (reset > 0) outcome.retryAfterSeconds = Math.max(1, Math.ceil((reset - Date.now()) / 1000));
  else if (retryAfter > 0) outcome.retryAfterSeconds = retryAfter;
}
return [{ json: { outcome } }];
