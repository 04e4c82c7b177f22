// LinkedIn: after the uploads, one item again: for a video, the finalizeUpload request
// with the ETag of every uploaded part (in order); for images, nothing to finalize.
const first = $('LinkedIn: prepare').first().json;
const init = $('LinkedIn: initialize upload').first().json;
const uploads = $input.all().map((i) => i.json);
const ok = uploads.every((u) => u.statusCode && u.statusCode < 300);
if (!first.video || !ok) return [{ json: { finalize: false } }];
const value = init.body.value;
const etags = uploads.map((u) => (u.headers || {}).etag);
return [{
  json: {
    finalize: true,
    base: first.base,
    version: first.version,
    body: { finalizeUploadRequest: { video: value.video, uploadToken: value.uploadToken || '', uploadedPartIds: etags } },
  },
}];
