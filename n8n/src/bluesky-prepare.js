// Bluesky: the post's text with its facets (links, hashtags and mentions, at UTF-8 byte offsets, as
// app.bsky.richtext.facet says), checked against Bluesky's limits before any request.
// BLUESKY_API_BASE_URL overrides https://bsky.social (the PDS; tests point it at a fake).
const item = $input.first();
const { post } = item.json;
const media = item.json.media || [];
// Refused before any request: permanent (no status would read as "no answer", retryable).
const fail = (code, message) => [{ json: { outcome: { ok: false, code, message, permanent: true } } }];
const link = post.content.link || '';
let text = post.content.text || '';
if (media.length > 4) {
  return fail('BlueskyTooManyImages', `Bluesky takes at most 4 images per post; this post has ${media.length}`);
}
const other = media.find((m) => !String(m.mimeType || '').startsWith('image/'));
if (other) {
  return fail('BlueskyMediaType', `the Bluesky branch posts images only; ${other.url} is ${other.mimeType}`);
}
// With images there is no link card: the link goes into the text (as a link facet).
if (link && media.length && !text.includes(link)) text = text ? `${text}\n${link}` : link;
const graphemes = typeof Intl !== 'undefined' && Intl.Segmenter
  ? [...new Intl.Segmenter().segment(text)].length : [...text].length;
if (graphemes > 300) {
  return fail('BlueskyTextTooLong', `Bluesky allows 300 graphemes per post; the text has ${graphemes}`);
}
const utf8 = (s) => {
  let n = 0;
  for (const ch of s) {
    const c = ch.codePointAt(0);
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c < 0x10000 ? 3 : 4;
  }
  return n;
};
const span = (start, end) => ({ byteStart: utf8(text.slice(0, start)), byteEnd: utf8(text.slice(0, end)) });
const facets = [];
for (const m of text.matchAll(/https?:\/\/[^\s<>"]+/g)) {
  const uri = m[0].replace(/[.,;:!?)\]}'"]+$/, '');
  facets.push({ index: span(m.index, m.index + uri.length), features: [{ $type: 'app.bsky.richtext.facet#link', uri }] });
}
for (const m of text.matchAll(/(^|\s)#([^\s#]+)/gu)) {
  const tag = m[2].replace(/[.,;:!?)\]}'"]+$/, '');
  if (!tag || /^\d+$/.test(tag) || tag.length > 64) continue;
  const start = m.index + m[1].length;
  facets.push({ index: span(start, start + 1 + tag.length), features: [{ $type: 'app.bsky.richtext.facet#tag', tag }] });
}
// Mentions link to an account by DID: bluesky-mentions.js has each handle resolved.
const mentions = [];
for (const m of text.matchAll(/(^|[\s(])@([a-zA-Z0-9][a-zA-Z0-9.-]*\.[a-zA-Z][a-zA-Z0-9.-]*)/g)) {
  const handle = m[2].replace(/[.-]+$/, '');
  const start = m.index + m[1].length;
  mentions.push({ handle: handle.toLowerCase(), index: span(start, start + 1 + handle.length) });
}
const base = String($env.BLUESKY_API_BASE_URL || 'https://bsky.social').replace(/\/+$/, '');
return [{ json: { ...item.json, bluesky: { base, text, facets, mentions, link } }, binary: item.binary }];
