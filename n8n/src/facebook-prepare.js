// Facebook Page: the message, the link and the photos, checked before any request.
// FACEBOOK_API_BASE_URL overrides https://graph.facebook.com/v23.0 (version included).
const item = $input.first();
const { post } = item.json;
const media = item.json.media || [];
// Refused before any request: permanent (no status would read as "no answer", retryable).
const fail = (code, message) => [{ json: { outcome: { ok: false, code, message, permanent: true } } }];
const other = media.find((m) => !String(m.mimeType || '').startsWith('image/'));
if (other) {
  return fail('FacebookMediaType', `the Facebook branch posts photos only; ${other.url} is ${other.mimeType}`);
}
const link = post.content.link || '';
let message = post.content.text || '';
// A post with photos has no link preview: the link goes into the message.
if (link && media.length && !message.includes(link)) message = message ? `${message}\n${link}` : link;
const base = String($env.FACEBOOK_API_BASE_URL || 'https://graph.facebook.com/v23.0').replace(/\/+$/, '');
return [{ json: { ...item.json, graph: { base, message, link: media.length ? '' : link } }, binary: item.binary }];
