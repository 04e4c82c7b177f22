// Instagram and Threads: the branch's exit, one outcome per post: the published media's
// id, or what the failing answer means (facebook-graph.js).
const res = $input.first().json;
if (res.outcome) return [{ json: { outcome: res.outcome } }];
if (res.statusCode === 200 && res.body && res.body.id) {
  return [{ json: { outcome: { ok: true, externalId: String(res.body.id) } } }];
}
const found = $(`${NET.name}: find account`).first().json.statusCode === 200;
return [{ json: { outcome: graphAnswer(res, found ? 'publishing' : `reading the account of the credential "${NET.credential}"`) } }];
