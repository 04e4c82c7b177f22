// Facebook Page: the branch's exit, one outcome per post: the post's id
// (<page-id>_<post-id>) and URL, or what the failing answer means (facebook-graph.js).
const res = $input.first().json;
if (res.outcome) return [{ json: { outcome: res.outcome } }];
if (res.statusCode === 200 && res.body && res.body.id) {
  return [{ json: { outcome: { ok: true, externalId: res.body.id, externalUrl: `https://www.facebook.com/${res.body.id}` } } }];
}
const found = $('Facebook: find account').first().json.statusCode === 200;
return [{ json: { outcome: graphAnswer(res, found ? 'creating the post' : `reading the Page of the credential "${NET.credential}"`) } }];
