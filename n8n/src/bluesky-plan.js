// Bluesky: was this post published already (a lost callback, n8n restarted after the
// post)? Bluesky has no idempotency key, so the account's latest posts are compared: the
// same text created since publishAt is this post. Otherwise one item per image to upload.
const prepared = $('Bluesky: prepare').first();
const { post, bluesky } = prepared.json;
const media = prepared.json.media || [];
const listing = $input.first().json;
if (listing.statusCode !== 200) return [{ json: { outcome: blueskyAnswer(listing, 'reading recent posts') } }];
const since = Date.parse(post.publishAt) - 60 * 1000;
const earlier = (listing.body.records || []).find((r) => r.value && r.value.text === bluesky.text
  && Date.parse(r.value.createdAt) >= since);
if (earlier) {
  const did = earlier.uri.split('/')[2];
  const rkey = earlier.uri.split('/').pop();
  return [{ json: { outcome: {
    ok: false, code: 'BlueskyDuplicate', duplicate: true, externalId: earlier.uri,
    externalUrl: `https://bsky.app/profile/${did}/post/${rkey}`,
    message: `Bluesky already has this post: ${earlier.uri}`,
  } } }];
}
if (!media.length) return [{ json: { upload: false } }];
return media.map((m, index) => ({ json: { upload: true, index, binaryKey: m.binaryKey }, binary: prepared.binary }));
