// Where and as whom to post, and one item per media file to upload.
// LINKEDIN_API_BASE_URL overrides https://api.linkedin.com (tests point it at a fake);
// LINKEDIN_API_VERSION is the LinkedIn-Version header (YYYYMM, LinkedIn retires old ones).
// The author is the post's spec.account when it is a URN (urn:li:person:… or
// urn:li:organization:…), else LINKEDIN_AUTHOR_URN.
const { post, idempotencyKey } = $input.first().json;
const base = ($env.LINKEDIN_API_BASE_URL || 'https://api.linkedin.com').replace(/\/+$/, '');
const version = $env.LINKEDIN_API_VERSION || '202601';
const account = post.account || '';
const author = account.startsWith('urn:li:') ? account : $env.LINKEDIN_AUTHOR_URN;
const common = { post, idempotencyKey, base, version, author };
if (!author) {
  const error = `account ${JSON.stringify(account)} is not a LinkedIn URN and n8n has no LINKEDIN_AUTHOR_URN`;
  return [{ json: { ...common, media: null, error } }];
}
const media = post.content.media || [];
if (!media.length) return [{ json: { ...common, media: null } }];
return media.map((m) => ({ json: { ...common, media: m } }));
