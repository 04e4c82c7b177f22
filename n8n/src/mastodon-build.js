// Mastodon: the POST /api/v1/statuses request from the post and its uploaded media, or
// the failure of an upload. Herald's Idempotency-Key goes on as Mastodon's own
// Idempotency-Key header: the instance itself answers a repeat with the first status.
const prepared = $('Mastodon: prepare').all();
const first = prepared[0].json;
if (first.outcome) return [{ json: { ready: false, outcome: first.outcome } }];
const { post, idempotencyKey } = $('Route on channel').first().json;
const ids = [];
if (first.upload) {
  for (const res of $('Mastodon: upload media').all().map((i) => i.json)) {
    const status = res.statusCode;
    // 200: processed; 202: accepted, still processing (the status can name it already).
    const id = res.body && res.body.id;
    if (!status || status >= 300 || !id) {
      const detail = res.body && res.body.error ? res.body.error : (res.error && res.error.message) || JSON.stringify(res.body);
      const outcome = { ok: false, code: status ? `MastodonMediaUpload${status}` : 'MastodonUnreachable', message: `Mastodon: uploading media failed: ${detail}`, credential: 'Mastodon (Herald)' };
      if (status) outcome.status = status;
      return [{ json: { ready: false, outcome } }];
    }
    ids.push(String(id));
  }
}
const { text, link } = post.content;
const body = { status: link && !text.includes(link) ? `${text}\n\n${link}` : text, visibility: $env.MASTODON_VISIBILITY || 'public' };
if (ids.length) body.media_ids = ids;
return [{ json: { ready: true, base: first.base, idempotencyKey, body } }];
