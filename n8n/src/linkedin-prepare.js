// LinkedIn: where and as whom to post, and one item per image to upload.
// LINKEDIN_API_BASE_URL overrides https://api.linkedin.com (tests point it at a fake);
// LINKEDIN_API_VERSION is the LinkedIn-Version header (YYYYMM, LinkedIn retires old ones).
// The author is the post's spec.account when it is a URN (urn:li:person:… or
// urn:li:organization:…), else LINKEDIN_AUTHOR_URN.
const entry = $input.first();
const { post, media } = entry.json;
const base = ($env.LINKEDIN_API_BASE_URL || 'https://api.linkedin.com').replace(/\/+$/, '');
const version = $env.LINKEDIN_API_VERSION || '202601';
const account = post.account || '';
const author = account.startsWith('urn:li:') ? account : $env.LINKEDIN_AUTHOR_URN;
const refuse = (code, message) => [{ json: { upload: false, outcome: { ok: false, code, message, permanent: true } } }];
if (!author) {
  return refuse('LinkedInAccount', `account ${JSON.stringify(account)} is not a LinkedIn URN and n8n has no LINKEDIN_AUTHOR_URN`);
}
if (media.some((m) => m.type === 'video')) {
  // Never sent to the Images API as before; the Videos API upload is not in this branch yet.
  return refuse('MediaNotSupported', 'the LinkedIn branch does not upload videos yet (Videos API); nothing was posted');
}
if (post.content.link && media.length > 1) {
  // An article shows one thumbnail: the other images would be dropped without a word.
  return refuse('MediaNotSupported',
    `LinkedIn shows a link post with one image at most; this post has a link and ${media.length} images: remove the link or keep one image`);
}
const common = { base, version, author };
if (!media.length) return [{ json: { upload: false, ...common } }];
return media.map((m) => ({ json: { upload: true, ...common, altText: m.altText, binaryKey: m.binaryKey } }));
