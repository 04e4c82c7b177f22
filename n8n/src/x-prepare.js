// X: where to post and one item per media file to upload (its bytes as binary `data`).
// X_API_BASE_URL overrides https://api.x.com (tests point it at a fake). X takes up to
// 4 images, or one video, per post.
const entry = $input.first();
const { post, media } = entry.json;
const base = ($env.X_API_BASE_URL || 'https://api.x.com').replace(/\/+$/, '');
const refuse = (message) => [{ json: { upload: false, outcome: { ok: false, code: 'MediaNotSupported', message, permanent: true } } }];
const videos = media.filter((m) => m.type === 'video').length;
if (videos > 1 || (videos && media.length > 1)) return refuse('X takes one video, or up to 4 images, per post; nothing was posted');
// Videos need X's chunked upload (INIT/APPEND/FINALIZE, then processing): not in this branch yet.
if (videos) return refuse('the X branch does not upload videos yet (chunked media upload); nothing was posted');
if (media.length > 4) return refuse(`X takes up to 4 images per post; this post has ${media.length}; nothing was posted`);
if (!media.length) return [{ json: { upload: false, base } }];
return media.map((m) => ({
  json: {
    upload: true,
    base,
    category: m.type === 'video' ? 'tweet_video' : m.mimeType === 'image/gif' ? 'tweet_gif' : 'tweet_image',
    mediaType: m.mimeType,
    altText: m.altText || '',
  },
  binary: { data: entry.binary[m.binaryKey] },
}));
