// Builds the Posts API request from the post and its uploaded images, or the failure to
// report when a step before it failed. Text goes out in LinkedIn's "little text" format,
// whose reserved characters must be escaped.
const prepared = $('Prepare').all();
const { post, idempotencyKey, base, version, author, error } = prepared[0].json;
const retryable = (status) => status === 429 || status >= 500;
const fail = (code, message, canRetry) => [{
  json: {
    ready: false,
    callback: post.callback,
    result: {
      namespace: post.namespace, name: post.name, uid: post.id, attempt: post.attempt,
      status: 'failed', error: { code, message: String(message).slice(0, 1000), retryable: canRetry },
    },
  },
}];
const describe = (res) => {
  if (res.error) return res.error.message || JSON.stringify(res.error);
  const body = res.body;
  if (body && typeof body === 'object') return body.message || JSON.stringify(body);
  return body ? String(body) : `HTTP ${res.statusCode}`;
};
if (error) return fail('LinkedInAccount', error, false);

const images = [];
if (prepared[0].json.media) {
  const inits = $('Initialize upload').all();
  const downloads = $('Download media').all();
  const uploads = $('Upload image').all();
  for (let i = 0; i < prepared.length; i++) {
    const media = prepared[i].json.media;
    const steps = [
      ['LinkedInImageInit', 'initializing the image upload', inits[i].json],
      ['MediaDownload', `downloading ${media.url}`, downloads[i].json],
      ['LinkedInImageUpload', 'uploading the image', uploads[i].json],
    ];
    for (const [code, what, res] of steps) {
      const status = res.statusCode;
      if (!status || status >= 300) {
        // No status: the request never got an answer (network), worth another attempt.
        return fail(code, `${what} failed: ${status ? `HTTP ${status}: ` : ''}${describe(res)}`,
          !status || retryable(status));
      }
    }
    const image = { id: inits[i].json.body.value.image };
    if (media.altText) image.altText = media.altText;
    images.push(image);
  }
}

const little = (text) => text.replace(/[\\|{}@[\]()<>#*_~]/g, (c) => `\\${c}`);
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
  // A link post is an article; its first image, if any, is the preview's thumbnail.
  const article = { source: post.content.link, title: text.split('\n')[0].slice(0, 200) };
  if (images.length) article.thumbnail = images[0].id;
  body.content = { article };
} else if (images.length === 1) {
  body.content = { media: images[0] };
} else if (images.length > 1) {
  body.content = { multiImage: { images } };
}
return [{ json: { ready: true, post, idempotencyKey, base, version, body } }];
