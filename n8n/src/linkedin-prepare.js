// LinkedIn: where and as whom to post, and one item per image to upload.
// LINKEDIN_API_BASE_URL overrides https://api.linkedin.com (tests point it at a fake);
// LINKEDIN_API_VERSION is the LinkedIn-Version header (YYYYMM, LinkedIn retires old ones).
// The author is the handle of the account Herald resolved (post.account.handle): a URN,
// urn:li:person:… or urn:li:organization:…. Nothing else is ever the author: no default,
// no identity from the post's other fields.
const entry = $input.first();
const { post, media } = entry.json;
const base = ($env.LINKEDIN_API_BASE_URL || 'https://api.linkedin.com').replace(/\/+$/, '');
const version = $env.LINKEDIN_API_VERSION || '202601';
const handle = (post.account && typeof post.account.handle === 'string') ? post.account.handle : '';
const PART = 4 * 1024 * 1024;
const refuse = (code, message) => [{ json: { upload: false, outcome: { ok: false, code, message, permanent: true } } }];
if (!/^urn:li:(person|organization):[^\s]+$/.test(handle)) {
  return refuse('LinkedInAccount', `account handle ${JSON.stringify(handle)} is not a LinkedIn author URN (urn:li:person:<id> or urn:li:organization:<id>); nothing was posted`);
}
const author = handle;
const videos = media.filter((m) => m.type === 'video');
if (videos.length && media.length > 1) {
  return refuse('MediaNotSupported', `LinkedIn takes one video alone per post; this post has ${videos.length} video(s) and ${media.length - videos.length} image(s); nothing was posted`);
}
if (post.content.link && media.length > 1) {
  // An article shows one thumbnail: the other images would be dropped without a word.
  return refuse('MediaNotSupported',
    `LinkedIn shows a link post with one image at most; this post has a link and ${media.length} images: remove the link or keep one image`);
}
if (videos.length && post.content.link) {
  return refuse('MediaNotSupported', 'LinkedIn cannot show a link preview and a video in one post: remove the link or the video; nothing was posted');
}
const common = { base, version, author };
if (!media.length) return [{ json: { upload: false, ...common } }];
if (videos.length) {
  // The Videos API takes the file in parts of 4 MiB (its upload instructions name each
  // part's byte range; the attach step checks they match these).
  const m = videos[0];
  const bytes = await this.helpers.getBinaryDataBuffer(0, m.binaryKey);
  const binary = {};
  const parts = [];
  for (let first = 0, i = 0; first < bytes.length; first += PART, i++) {
    const last = Math.min(first + PART, bytes.length) - 1;
    binary[`part${i}`] = await this.helpers.prepareBinaryData(bytes.subarray(first, last + 1), `part${i}`, 'application/octet-stream');
    parts.push([first, last]);
  }
  return [{
    json: {
      upload: true, video: true, ...common, parts,
      initPath: '/rest/videos?action=initializeUpload',
      initBody: { initializeUploadRequest: { owner: author, fileSizeBytes: bytes.length, uploadCaptions: false, uploadThumbnail: false } },
    },
    binary,
  }];
}
return media.map((m) => ({
  json: {
    upload: true, video: false, ...common, altText: m.altText, binaryKey: m.binaryKey,
    initPath: '/rest/images?action=initializeUpload',
    initBody: { initializeUploadRequest: { owner: author } },
  },
}));
