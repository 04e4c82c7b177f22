"""Herald: publishes ScheduledPosts through n8n at the right second."""

from herald import lean

# Before anything imports the Kubernetes client library (kopf does, at its own import):
# its generated API and model modules then load only when used (herald.lean).
lean.install()

__version__ = "0.1.0"
