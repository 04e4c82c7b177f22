// Publishes nowhere: logs the post and reports it published, so Herald can be tried
// against a real n8n in minutes. The result says so: no URL, an "echo:" id.
const { post } = $input.first().json;
console.log(`herald echo: ${post.namespace}/${post.name} attempt ${post.attempt}: ${post.content.text}`);
return [{
  json: {
    callback: post.callback,
    result: {
      namespace: post.namespace,
      name: post.name,
      uid: post.id,
      attempt: post.attempt,
      status: 'published',
      externalId: `echo:${post.id}:${post.attempt}`,
    },
  },
}];
