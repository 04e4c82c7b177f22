// LinkedIn: the Posts API request from the post and its uploaded images, or the failure
// of a step before. Text goes out in LinkedIn's "little text" format: hashtags become
// {hashtag|\#|tag} so they stay hashtags, mentions already written as
// @[Name](urn:li:…) stay mentions, every other reserved character is escaped.
const prepared = $('LinkedIn: prepare').all();
const first = prepared[0].json;
if (first.outcome) return [{ json: { ready: false, outcome: first.outcome } }];
const { post } = $('Route on channel').first().json;
const { author, base, version } = first;
const CREDENTIAL = 'LinkedIn (Herald)';
const describe = (res) => {
  if (res.error) return res.error.message || JSON.stringify(res.error);
  const body = res.body;
  if (body && typeof body === 'object') return body.message || JSON.stringify(body);
  return body ? String(body) : `HTTP ${res.statusCode}`;
};
const images = [];
if (first.upload) {
  const inits = $('LinkedIn: initialize upload').all();
  const uploads = $('LinkedIn: upload image').all();
  for (let i = 0; i < prepared.length; i++) {
    for (const [code, what, res] of [
      ['LinkedInImageInit', 'initializing the image upload', inits[i].json],
      ['LinkedInImageUpload', 'uploading the image', uploads[i].json],
    ]) {
      const status = res.statusCode;
      if (!status || status >= 300) {
        const outcome = { ok: false, code, message: `LinkedIn: ${what} failed: ${describe(res)}`, credential: CREDENTIAL };
        if (status) outcome.status = status;
        return [{ json: { ready: false, outcome } }];
      }
    }
    const image = { id: inits[i].json.body.value.image };
    if (prepared[i].json.altText) image.altText = prepared[i].json.altText;
    images.push(image);
  }
}

const RESERVED = /[\\|{}@[\]()<>#*_~]/g;
const escape = (s) => s.replace(RESERVED, (c) => `\\${c}`);
const little = (text) => {
  // Hashtags and ready-made mentions are kept; the text between them is escaped.
  const token = /@\[([^\]]+)\]\((urn:li:(?:person|organization):[A-Za-z0-9_-]+)\)|#([\p{L}\p{N}_]*\p{L}[\p{L}\p{N}_]*)/gu;
  let out = '';
  let last = 0;
  for (const m of text.matchAll(token)) {
    out += escape(text.slice(last, m.index));
    out += m[3] !== undefined ? `{hashtag|\\#|${m[3]}}` : `@[${escape(m[1])}](${m[2]})`;
    last = m.index + m[0].length;
  }
  return out + escape(text.slice(last));
};
const text = post.content.text;
const body = {
  author,
  commentary: little(text),
  visibility: 'PUBLIC',
  distribution: { feedDistribution: 'MAIN_FEED', targetEntities: [], thirdPartyDistributionChannels: [] },
  lifecycleState: 'PUBLISHED',
  isReshareDisabledByAuthor: false,
};
if (post.content.link) {
  // A link post is an article; its one image, if any, is the preview's thumbnail.
  const article = { source: post.content.link, title: text.split('\n')[0].slice(0, 200) };
  if (images.length) article.thumbnail = images[0].id;
  body.content = { article };
} else if (images.length === 1) {
  body.content = { media: images[0] };
} else if (images.length > 1) {
  body.content = { multiImage: { images } };
}
return [{ json: { ready: true, base, version, body } }];
