// De-duplicates on Herald's Idempotency-Key across executions: a key that was published
// before is answered from the record, never posted again. The record is this workflow's
// static data, which n8n saves in its database when a production execution ends, so it
// survives a restart of n8n as long as n8n's database does.
const { post, idempotencyKey } = $input.first().json;
const store = $getWorkflowStaticData('global');
const prior = (store.heraldPublished || {})[idempotencyKey];
if (prior) {
  return [{
    json: {
      duplicate: true,
      callback: post.callback,
      result: {
        namespace: post.namespace,
        name: post.name,
        uid: post.id,
        attempt: post.attempt,
        status: 'published',
        externalId: prior.externalId,
        externalUrl: prior.externalUrl,
      },
    },
  }];
}
return [{ json: { duplicate: false, post, idempotencyKey } }];
