// Turns a branch's outcome (or a shared stage's refusal) into Herald's callback, and
// keeps the de-duplication record: published → the record says so (written to a temp
// file and renamed into place, so a reader never sees half of it); failed → the claim is
// released so Herald's next attempt can claim the key again.
// Retryable or not comes from ONE table, operator/herald/statuses.py, that build.py
// writes here: no answer, 408/425/429 and 5xx are worth another attempt.
const fs = require('fs');
const RETRYABLE_4XX = __RETRYABLE_4XX__; // operator/herald/statuses.py
const isRetryable = (status) => status === undefined || status === null || RETRYABLE_4XX.includes(status) || status >= 500;

const { post, idempotencyKey, dedupFile } = $('Prepare').first().json;
const outcome = $input.first().json.outcome || { ok: false, code: 'NoOutcome', message: 'the branch gave no outcome' };
const base = { namespace: post.namespace, name: post.name, uid: post.id, attempt: post.attempt };
const done = (result) => [{ json: { callback: post.callback, result: { ...base, ...result } } }];

const published = (externalId, externalUrl) => {
  const record = { state: 'published', externalId, externalUrl, at: Date.now() };
  const tmp = `${dedupFile}.${$execution.id}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(record));
  fs.renameSync(tmp, dedupFile);
  const result = { status: 'published', externalId };
  if (externalUrl) result.externalUrl = externalUrl;
  return done(result);
};
const failed = (code, message, retryable, retryAfterSeconds) => {
  try { fs.unlinkSync(dedupFile); } catch (e) { /* already released */ }
  const error = { code, message: String(message).slice(0, 1000), retryable };
  // Only with a reset time: Herald schedules the next attempt no earlier than that.
  if (retryable && Number.isFinite(retryAfterSeconds) && retryAfterSeconds > 0) {
    error.retryAfterSeconds = Math.ceil(retryAfterSeconds);
  }
  return done({ status: 'failed', error });
};

if (outcome.ok) return published(outcome.externalId, outcome.externalUrl);
if (outcome.duplicate) {
  // The network says this post is already live: that is Herald's goal, reached.
  if (outcome.externalId) return published(outcome.externalId, outcome.externalUrl);
  return failed('Duplicate', `${outcome.message} (the network did not say which post; not posted again)`, false);
}
if (outcome.status === 401) {
  const credential = outcome.credential || 'the network\'s credential';
  return failed('ReconnectAccount',
    `reconnect the n8n credential "${credential}": the network refused it (HTTP 401: ${outcome.message})`, false);
}
const retryable = outcome.permanent ? false : isRetryable(outcome.status);
return failed(outcome.code || 'NetworkError', outcome.message || 'no message', retryable, outcome.retryAfterSeconds);
