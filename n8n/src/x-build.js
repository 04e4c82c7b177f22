// X: the POST /2/tweets request from the post and its uploaded media, or the failure of
// an upload. A link goes into the text (X makes a card of it). Reply settings are not
// restricted unless X_REPLY_SETTINGS names one (following, mentionedUsers, subscribers,
// verified).
const prepared = $('X: prepare').all();
const first = prepared[0].json;
if (first.outcome) return [{ json: { ready: false, outcome: first.outcome } }];
const { post } = $('Route on channel').first().json;
const ids = [];
if (first.upload) {
  for (const res of $('X: upload media').all().map((i) => i.json)) {
    const status = res.statusCode;
    const id = res.body && res.body.data && res.body.data.id;
    if (!status || status >= 300 || !id) {
      const detail = res.body && typeof res.body === 'object' ? (res.body.detail || res.body.title || JSON.stringify(res.body)) : (res.error && res.error.message) || res.body;
      const outcome = { ok: false, code: status ? `XMediaUpload${status}` : 'XUnreachable', message: `X: uploading media failed: ${detail}`, credential: 'X (Herald)' };
      if (status) outcome.status = status;
      return [{ json: { ready: false, outcome } }];
    }
    ids.push(String(id));
  }
  if ($('X: set alt text').isExecuted) {
    for (const res of $('X: set alt text').all().map((i) => i.json)) {
      const status = res.statusCode;
      if (!status || status >= 300) {
        const outcome = { ok: false, code: status ? `XMediaMetadata${status}` : 'XUnreachable', message: `X: setting the alt text failed: ${JSON.stringify(res.body || (res.error && res.error.message))}`, credential: 'X (Herald)' };
        if (status) outcome.status = status;
        return [{ json: { ready: false, outcome } }];
      }
    }
  }
}
const { text, link } = post.content;
const body = { text: link && !text.includes(link) ? `${text} ${link}` : text };
if (ids.length) body.media = { media_ids: ids };
if ($env.X_REPLY_SETTINGS) body.reply_settings = $env.X_REPLY_SETTINGS;
return [{ json: { ready: true, base: first.base, body } }];
