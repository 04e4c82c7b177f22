// Meta's Graph APIs (Facebook Page, Instagram, Threads): what an answer that is not a
// success means for Herald. Prepended to those branches' Code nodes after a line that
// sets NET = { name, credential }. Graph answers most errors with HTTP 400 and says what
// happened in error.code; the outcome's status is what that code means, so Herald's one
// table of retryable statuses decides: 190 (token expired or revoked) → 401, the
// rate-limit codes → 429, an error Graph calls transient → 503.
const GRAPH_RATE_LIMITS = [4, 17, 32, 613];
function graphRetryAfter(headers) {
  const after = headers['retry-after'];
  if (after !== undefined && /^\d+$/.test(String(after))) return Math.max(1, Number(after));
  // X-Business-Use-Case-Usage: {"<id>": [{"type", "call_count", …,
  // "estimated_time_to_regain_access": <minutes>}]} (also X-Ad-Account-Usage's field).
  let minutes;
  for (const name of ['x-business-use-case-usage', 'x-ad-account-usage']) {
    if (!headers[name]) continue;
    try {
      const usage = JSON.parse(headers[name]);
      const rows = Array.isArray(usage) ? usage : Object.values(usage).flat();
      for (const row of [usage, ...rows]) {
        const m = Number(row && row.estimated_time_to_regain_access);
        if (Number.isFinite(m) && m > 0) minutes = Math.max(minutes || 0, m);
      }
    } catch (e) { /* a header we cannot read gives no time */ }
  }
  return minutes ? minutes * 60 : undefined;
}
function graphAnswer(res, what) {
  const status = res.statusCode;
  if (!status) {
    const reason = res.error ? (res.error.message || JSON.stringify(res.error)) : 'no answer';
    return { ok: false, code: `${NET.name}Unreachable`, message: `${what}: ${NET.name} gave no answer: ${reason}`.slice(0, 1000) };
  }
  const error = (res.body && typeof res.body === 'object' && res.body.error) || {};
  const code = Number(error.code);
  const sub = Number(error.error_subcode);
  const text = error.message || (typeof res.body === 'string' && res.body) || '';
  const outcome = {
    ok: false,
    status,
    code: error.code !== undefined ? `${NET.name}Error${error.code}` : `${NET.name}${status}`,
    message: `${what}: ${NET.name} answered HTTP ${status}${error.code !== undefined ? ` (#${error.code}${sub ? `/${sub}` : ''})` : ''}${text ? `: ${text}` : ''}`.slice(0, 1000),
  };
  if (code === 506) {
    // Facebook's "Duplicate status message": the same text was just posted. Graph does
    // not say which post that is.
    outcome.code = `${NET.name}Duplicate`;
    outcome.duplicate = true;
  } else if (code === 190 || status === 401) {
    outcome.status = 401;
    outcome.credential = NET.credential;
  } else if (status === 429 || GRAPH_RATE_LIMITS.includes(code) || (code >= 80001 && code <= 80014)
    || (code === 9 && sub === 2207042)) {
    // 9/2207042: Instagram's publishing limit (posts per 24 hours) is reached.
    outcome.status = 429;
  } else if (error.is_transient === true && status < 500) {
    outcome.status = 503;
  }
  if (outcome.status === 429 || outcome.status >= 500) {
    const retry = graphRetryAfter(res.headers || {});
    if (retry !== undefined) outcome.retryAfterSeconds = retry;
  }
  return outcome;
}
// The account behind the token: GET /me answers {id} (Page, Threads) or {user_id} (Instagram).
function graphAccount() {
  const me = $(`${NET.name}: find account`).first().json.body;
  return String(me.user_id || me.id);
}
