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
let video = null;
if (first.upload) {
  const inits = $('LinkedIn: initialize upload').all();
  const attached = $('LinkedIn: attach').all();
  const uploads = $('LinkedIn: upload').all();
  const what = first.video ? 'video' : 'image';
  const steps = [
    ...inits.map((i) => [`LinkedIn${first.video ? 'Video' : 'Image'}Init`, `initializing the ${what} upload`, i.json]),
    ...(attached[0].json.error ? [['LinkedInVideoParts', attached[0].json.error, { statusCode: 0, error: { message: attached[0].json.error } }]] : []),
    ...uploads.map((u) => [`LinkedIn${first.video ? 'Video' : 'Image'}Upload`, `uploading the ${what}`, u.json]),
  ];
  if (first.video) {
    const fin = $('LinkedIn: finalize video').all();
    steps.push(['LinkedInVideoFinalize', 'finalizing the video upload', fin.length ? fin[0].json : { error: { message: 'not run' } }]);
  }
  for (const [code, doing, res] of steps) {
    const status = res.statusCode;
    if (!status || status >= 300) {
      const outcome = { ok: false, code, message: `LinkedIn: ${doing} failed: ${describe(res)}`, credential: CREDENTIAL };
      if (status) outcome.status = status;
      if (code === 'LinkedInVideoParts') outcome.permanent = true;
      return [{ json: { ready: false, outcome } }];
    }
  }
  if (first.video) video = inits[0].json.body.value.video;
  else {
    for (let i = 0; i < prepared.length; i++) {
      const image = { id: inits[i].json.body.value.image };
      if (prepared[i].json.altText) image.altText = prepared[i].json.altText;
      images.push(image);
    }
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
} else if (video) {
  body.content = { media: { id: video, title: text.split('\n')[0].slice(0, 200) } };
} else if (images.length === 1) {
  body.content = { media: images[0] };
} else if (images.length > 1) {
  body.content = { multiImage: { images } };
}
return [{ json: { ready: true, base, version, body } }];
