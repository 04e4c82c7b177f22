// Bluesky: what an XRPC answer that is not a success means for Herald (prepended to the
// Bluesky Code nodes that read an answer). `res` is an HTTP Request node's full response.
const BLUESKY_CREDENTIAL = 'Bluesky (Herald)';
function blueskyRetryAfter(headers) {
  const now = Date.now();
  const after = headers['retry-after'];
  if (after !== undefined) {
    const seconds = /^\d+$/.test(String(after)) ? Number(after) : (Date.parse(after) - now) / 1000;
    if (Number.isFinite(seconds)) return Math.max(1, Math.ceil(seconds));
  }
  // The PDS's rate-limit window ends at ratelimit-reset, in epoch seconds.
  const reset = Number(headers['ratelimit-reset']);
  if (headers['ratelimit-reset'] !== undefined && Number.isFinite(reset)) {
    return Math.max(1, Math.ceil(reset - now / 1000));
  }
  return undefined;
}
function blueskyAnswer(res, what) {
  const status = res.statusCode;
  if (!status) {
    const reason = res.error ? (res.error.message || JSON.stringify(res.error)) : 'no answer';
    return { ok: false, code: 'BlueskyUnreachable', message: `${what}: Bluesky gave no answer: ${reason}`.slice(0, 1000) };
  }
  const body = res.body && typeof res.body === 'object' ? res.body : {};
  const detail = body.message || (typeof res.body === 'string' && res.body) || '';
  const outcome = {
    ok: false,
    status,
    code: `Bluesky${body.error || status}`,
    message: `${what}: Bluesky answered HTTP ${status}${body.error ? ` ${body.error}` : ''}${detail ? `: ${detail}` : ''}`.slice(0, 1000),
  };
  // Wrong app password, revoked app password, or a session the PDS no longer accepts.
  if (status === 401 || ['ExpiredToken', 'InvalidToken', 'AuthenticationRequired'].includes(body.error)) {
    outcome.status = 401;
    outcome.credential = BLUESKY_CREDENTIAL;
  }
  if (status === 429 || status >= 500) {
    const retry = blueskyRetryAfter(res.headers || {});
    if (retry !== undefined) outcome.retryAfterSeconds = retry;
  }
  return outcome;
}
