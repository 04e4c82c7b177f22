// LinkedIn: its answer to the create as the branch's outcome. 201 carries the post's URN
// in x-restli-id. A repeat is answered 422 "Content is a duplicate of urn:li:share:…":
// the post is live, with that URN. 429: LinkedIn's daily limits reset at midnight UTC;
// Retry-After wins when LinkedIn sends one.
const CREDENTIAL = 'LinkedIn (Herald)';
const res = $input.first().json;
if (res.outcome) return [{ json: { outcome: res.outcome } }];
const status = res.statusCode;
const headers = res.headers || {};
const url = (urn) => `https://www.linkedin.com/feed/update/${urn}/`;
if (status === 201) {
  const urn = headers['x-restli-id'] || headers['x-linkedin-id'];
  return [{ json: { outcome: { ok: true, externalId: urn, externalUrl: url(urn) } } }];
}
let message;
if (res.error && !status) message = res.error.message || JSON.stringify(res.error);
else if (res.body && typeof res.body === 'object') {
  message = [res.body.code, res.body.message].filter(Boolean).join(': ') || JSON.stringify(res.body);
} else message = res.body ? String(res.body) : 'no body';
const outcome = {
  ok: false,
  code: status ? `LinkedIn${status}` : 'LinkedInUnreachable',
  message: `LinkedIn answered ${status ? `HTTP ${status}` : 'nothing'}: ${message}`,
  credential: CREDENTIAL,
};
if (status) outcome.status = status;
const duplicate = status === 422 && /duplicate/i.test(message);
if (duplicate) {
  outcome.duplicate = true;
  const urn = (message.match(/urn:li:(?:share|ugcPost):\d+/) || [])[0];
  if (urn) Object.assign(outcome, { externalId: urn, externalUrl: url(urn) });
}
if (status === 429) {
  const retryAfter = Number(headers['retry-after']);
  const now = new Date();
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  outcome.retryAfterSeconds = retryAfter > 0 ? retryAfter : Math.ceil((midnight - now.getTime()) / 1000);
}
return [{ json: { outcome } }];
