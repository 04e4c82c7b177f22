// Turns LinkedIn's answer into Herald's callback. 201 carries the post's URN in
// x-restli-id; it is remembered under the Idempotency-Key so a re-dispatch never posts
// again. 429 and 5xx are worth another attempt, other 4xx are not.
const res = $input.first().json;
const { post, idempotencyKey } = $('Build post').first().json;
const base = { namespace: post.namespace, name: post.name, uid: post.id, attempt: post.attempt };
const status = res.statusCode;
if (status === 201) {
  const headers = res.headers || {};
  const urn = headers['x-restli-id'] || headers['x-linkedin-id'];
  const externalUrl = `https://www.linkedin.com/feed/update/${urn}/`;
  const store = $getWorkflowStaticData('global');
  const published = store.heraldPublished || {};
  // Forget records older than 30 days: Herald never re-dispatches that late.
  const cutoff = Date.now() - 30 * 24 * 3600 * 1000;
  for (const [key, record] of Object.entries(published)) {
    if (Date.parse(record.at) < cutoff) delete published[key];
  }
  published[idempotencyKey] = { externalId: urn, externalUrl, at: new Date().toISOString() };
  store.heraldPublished = published;
  return [{ json: { callback: post.callback, result: { ...base, status: 'published', externalId: urn, externalUrl } } }];
}
let message;
if (res.error) message = res.error.message || JSON.stringify(res.error);
else if (res.body && typeof res.body === 'object') {
  message = [res.body.code, res.body.message].filter(Boolean).join(': ') || JSON.stringify(res.body);
} else message = res.body ? String(res.body) : 'no body';
const retryable = !status || status === 429 || status >= 500;
const error = {
  code: status ? `LinkedIn${status}` : 'LinkedInUnreachable',
  message: `LinkedIn answered ${status ? `HTTP ${status}` : 'nothing'}: ${message}`.slice(0, 1000),
  retryable,
};
return [{ json: { callback: post.callback, result: { ...base, status: 'failed', error } } }];
