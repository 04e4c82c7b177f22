// Mastodon: the instance and one item per media file to upload (binary `data`).
// MASTODON_API_BASE_URL is the instance's URL (https://mastodon.social, …): Mastodon has
// no central API. Mastodon takes up to 4 media per post and 500 characters by default;
// MASTODON_MAX_MEDIA and MASTODON_MAX_CHARACTERS follow an instance that differs.
const entry = $input.first();
const { post, media } = entry.json;
const base = String($env.MASTODON_API_BASE_URL || '').replace(/\/+$/, '');
const refuse = (code, message) => [{ json: { upload: false, outcome: { ok: false, code, message, permanent: true } } }];
if (!base) return refuse('MastodonInstance', 'n8n has no MASTODON_API_BASE_URL (the instance URL, e.g. https://mastodon.social); nothing was posted');
const max = Number($env.MASTODON_MAX_MEDIA || 4);
if (media.length > max) return refuse('MediaNotSupported', `this Mastodon instance takes up to ${max} media per post (MASTODON_MAX_MEDIA); this post has ${media.length}; nothing was posted`);
// The status as "Mastodon: build post" sends it, counted as Mastodon counts: every URL
// as 23 characters, a remote mention @user@domain as @user, the rest in graphemes.
const { text, link } = post.content;
const status = link && !text.includes(link) ? `${text}\n\n${link}` : text;
const countable = status
  .replace(/https?:\/\/[^\s]+/g, 'x'.repeat(23))
  .replace(/(^|[^\w])@(\w+)@[\w.-]+\w/g, '$1@$2');
const length = [...new Intl.Segmenter().segment(countable)].length;
const maxChars = Number($env.MASTODON_MAX_CHARACTERS || 500);
if (length > maxChars) return refuse('MastodonTextTooLong', `this Mastodon instance takes up to ${maxChars} characters per post (MASTODON_MAX_CHARACTERS; links count 23); this post has ${length}; nothing was posted`);
if (!media.length) return [{ json: { upload: false, base } }];
return media.map((m) => ({
  json: { upload: true, base, description: m.altText || '' },
  binary: { data: entry.binary[m.binaryKey] },
}));
