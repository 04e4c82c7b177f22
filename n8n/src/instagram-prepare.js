// Instagram: the caption and one container per image, checked before any request.
// Instagram fetches each image itself from image_url: the post's original https URL,
// already vetted by the shared media stage (the downloaded bytes are not sent).
// INSTAGRAM_API_BASE_URL overrides https://graph.instagram.com/v23.0 (version included).
const item = $input.first();
const { post } = item.json;
const media = item.json.media || [];
// Refused before any request: permanent (no status would read as "no answer", retryable).
const fail = (code, message) => [{ json: { outcome: { ok: false, code, message, permanent: true } } }];
if (!media.length) {
  return fail('InstagramNeedsImage', 'Instagram publishes only posts with at least one image; this post has none');
}
if (media.length > 10) {
  return fail('InstagramTooManyImages', `an Instagram carousel takes at most 10 images; this post has ${media.length}`);
}
const other = media.find((m) => !['image/jpeg', 'image/jpg'].includes(String(m.mimeType || '').toLowerCase()));
if (other) {
  return fail('InstagramMediaType', `Instagram publishes JPEG images only; ${other.url} is ${other.mimeType}`);
}
const link = post.content.link || '';
let caption = post.content.text || '';
// Instagram shows no link cards and does not link URLs in captions; the link is kept as text.
if (link && !caption.includes(link)) caption = caption ? `${caption}\n${link}` : link;
if ([...caption].length > 2200) {
  return fail('InstagramCaptionTooLong', `Instagram allows 2,200 characters per caption; this one has ${[...caption].length}`);
}
const single = media.length === 1;
const containers = media.map((m) => {
  const body = { image_url: m.url };
  if (single) body.caption = caption;
  else body.is_carousel_item = true;
  if (m.altText) body.alt_text = m.altText;
  return body;
});
const carousel = single ? null : { media_type: 'CAROUSEL', caption };
const base = String($env.INSTAGRAM_API_BASE_URL || 'https://graph.instagram.com/v23.0').replace(/\/+$/, '');
return [{ json: { ...item.json, graph: { base, text: caption, containers, carousel } } }];
