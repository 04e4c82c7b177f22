// Threads: the text and one container per image (or one TEXT container), checked before
// any request. Threads fetches each image itself from image_url: the post's original
// https URL, already vetted by the shared media stage.
// THREADS_API_BASE_URL overrides https://graph.threads.net/v1.0 (version included).
const item = $input.first();
const { post } = item.json;
const media = item.json.media || [];
// Refused before any request: permanent (no status would read as "no answer", retryable).
const fail = (code, message) => [{ json: { outcome: { ok: false, code, message, permanent: true } } }];
if (media.length > 20) {
  return fail('ThreadsTooManyImages', `a Threads carousel takes at most 20 images; this post has ${media.length}`);
}
const other = media.find((m) => !String(m.mimeType || '').startsWith('image/'));
if (other) {
  return fail('ThreadsMediaType', `the Threads branch posts images only; ${other.url} is ${other.mimeType}`);
}
const link = post.content.link || '';
let text = post.content.text || '';
// A text post shows the link as a preview (link_attachment); with images it goes into the text.
if (link && media.length && !text.includes(link)) text = text ? `${text}\n${link}` : link;
if ([...text].length > 500) {
  return fail('ThreadsTextTooLong', `Threads allows 500 characters per post; this one has ${[...text].length}`);
}
let containers;
if (!media.length) {
  const body = { media_type: 'TEXT', text };
  if (link) body.link_attachment = link;
  containers = [body];
} else {
  const single = media.length === 1;
  containers = media.map((m) => {
    const body = { media_type: 'IMAGE', image_url: m.url };
    if (single) body.text = text;
    else body.is_carousel_item = true;
    if (m.altText) body.alt_text = m.altText;
    return body;
  });
}
const carousel = containers.length > 1 ? { media_type: 'CAROUSEL', text } : null;
const base = String($env.THREADS_API_BASE_URL || 'https://graph.threads.net/v1.0').replace(/\/+$/, '');
return [{ json: { ...item.json, graph: { base, text, containers, carousel } } }];
