// X: its answer to POST /2/tweets as the branch's outcome. 201 {data: {id}}. A repeat is
// 403 "You are not allowed to create a Tweet with duplicate content." (X does not say
// which post: a permanent Duplicate). 429: x-rate-limit-reset is the epoch second the
// window resets.
const CREDENTIAL = 'X (Herald)';
const res = $input.first().json;
if (res.outcome) return [{ json: { outcome: res.outcome } }];
const status = res.statusCode;
const headers = res.headers || {};
const body = res.body && typeof res.body === 'object' ? res.body : {};
if (status === 201 && body.data && body.data.id) {
  const id = String(body.data.id);
  return [{ json: { outcome: { ok: true, externalId: id, externalUrl: `https://x.com/i/web/status/${id}` } } }];
}
const detail = body.detail || body.title || (res.error && !status ? res.error.message : null) || JSON.stringify(res.body || 'no body');
const outcome = {
  ok: false,
  code: status ? `X${status}` : 'XUnreachable',
  message: `X answered ${status ? `HTTP ${status}` : 'nothing'}: ${detail}`,
  credential: CREDENTIAL,
};
if (status) outcome.status = status;
if (status === 403 && /duplicate content/i.test(detail)) outcome.duplicate = true;
if (status === 429) {
  const reset = Number(headers['x-rate-limit-reset']);
  const retryAfter = Number(headers['retry-after']);
  if (reset > 0) outcome.retryAfterSeconds = Math.max(1, Math.ceil(reset - Date.now() / 1000));
  else if (retryAfter > 0) outcome.retryAfterSeconds = retryAfter;
}
return [{ json: { outcome } }];
