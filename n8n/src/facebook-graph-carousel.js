// Instagram and Threads: the carousel container is made; publish it.
const res = $input.first().json;
if (res.statusCode !== 200 || !res.body || !res.body.id) {
  return [{ json: { outcome: graphAnswer(res, 'creating the carousel container') } }];
}
return [{ json: { publish: { creation_id: String(res.body.id) } } }];
